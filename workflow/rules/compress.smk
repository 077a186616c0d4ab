# Compression: DeiT distillation of the student from the fine-tuned teacher, then accuracy-gated int8.
#
#   models/student.pt + reports/distill.{md,json}   vitedge.distill (teacher vs student table)
#   artefacts/<model>/<format>-int8/meta.json        vitedge.quantize, one job per model x format
#
# int8 formats: onnx (ORT dynamic/static, +fusion), torch (PT2E x86 .pt2), executorch (XNNPACK .pte),
# coreml (int8 weights), tensorrt (Q/DQ ONNX; the engine is built only where TensorRT and a GPU are,
# so it is not in the default `quantize.formats`), litert (ai-edge-quantizer dynamic-range / full-integer
# .tflite; needs `vitedge[litert]`: where litert-torch is missing its rows say "skipped: not built"). Each job fails only when no int8 variant, even
# with the greedy float fallback, stays within `quantize.max_drop` points of fp32 on val.
import os
import sys

QUANTIZE = config.setdefault("quantize", {})
QUANTIZE.setdefault("models", ["student"])
QUANTIZE.setdefault("formats", ["onnx", "torch", "executorch", "coreml"])
QUANTIZE_FORMATS = ("onnx", "torch", "executorch", "coreml", "tensorrt", "litert")
# workflow keys, not QuantizeConfig fields: per-format overrides are merged over the shared settings
_QUANTIZE_LAYOUT = ("models", "formats", *QUANTIZE_FORMATS)



def _litert_missing():
    """None when litert-torch (and the LiteRT interpreter) are installed, else why not."""
    import importlib.util

    missing = [p for m, p in (("litert_torch", "litert-torch"), ("ai_edge_litert", "ai-edge-litert"),
                              ("ai_edge_quantizer", "ai-edge-quantizer")) if importlib.util.find_spec(m) is None]
    return f"{', '.join(missing)} not installed (pip install 'vitedge[litert]')" if missing else None


LITERT_WHY = _litert_missing()
# int8 artefacts this host cannot build: the validation matrix shows them as skipped rows (export.smk merges)
QUANTIZE_UNBUILT = {(m, "litert", "int8"): LITERT_WHY for m in QUANTIZE["models"]
                    if LITERT_WHY and "litert" in QUANTIZE["formats"]}
if QUANTIZE_UNBUILT:
    print(f"vitedge: LiteRT int8 skipped on this host ({LITERT_WHY})", file=sys.stderr)
    QUANTIZE["formats"] = [f for f in QUANTIZE["formats"] if f != "litert"]


def quantize_config(fmt):
    shared = {k: v for k, v in QUANTIZE.items() if k not in _QUANTIZE_LAYOUT}
    return as_json({**shared, **(QUANTIZE.get(fmt) or {})})


rule distill:
    input:
        data=out("data/manifest.json"),
        teacher=out("models/teacher.pt"),
    output:
        model=out("models/student.pt"),
        report=out("reports/distill.md"),
        table=out("reports/distill.json"),
    params:
        cmd=launcher("vitedge.distill"),
        model=model_json("student"),
        train=as_json(config["distill"]),
        device=config["compute"]["device"],
    threads: workflow.cores
    log:
        out("logs/distill.log"),
    shell:
        "{params.cmd} --data {OUT}/data --teacher {input.teacher} --out {output.model} --model-json {params.model} "
        "--train-json {params.train} --device {params.device} --report {output.report} --resume > {log} 2>&1"


rule quantize:
    input:
        ckpt=out("models/{model}.pt"),
        data=out("data/manifest.json"),
    output:
        out("artefacts/{model}/{fmt}-int8/meta.json"),
    wildcard_constraints:
        model="teacher|student",
        fmt="|".join(QUANTIZE_FORMATS),
    params:
        cfg=lambda w: quantize_config(w.fmt),
    # the whole machine: every variant is timed against fp32, and a job beside it would skew that
    threads: workflow.cores
    log:
        out("logs/quantize/{model}-{fmt}.log"),
    shell:
        "python -m vitedge.quantize --checkpoint {input.ckpt} --model-name {wildcards.model} --format {wildcards.fmt} "
        "--data {OUT}/data --out {OUT}/artefacts --config-json {params.cfg} > {log} 2>&1"


INT8_ARTEFACTS = [out(f"artefacts/{model}/{fmt}-int8/meta.json") for model in QUANTIZE["models"] for fmt in QUANTIZE["formats"]]
COMPRESSION_BENCHMARK = shlex.quote(os.path.join(workflow.basedir, "benchmarks", "compression.py"))


rule compression_benchmark:
    """fp32 vs int8 per format: accuracy, size, latency (benchmarks/compression.py prints the same table), and
    what a user gains per runtime: int8 vs fp32 of the same runtime and every artefact vs torch eager fp32,
    batch 1 and batch 32, 1 and 2 threads, measured in this job."""
    input:
        INT8_ARTEFACTS,
        # the fp32 artefacts the speed table compares with (export.smk's; read when the DAG is built)
        fp32=lambda w: [out(f"artefacts/{m}/{f}-{p}/meta.json") for m in EXPORT["models"]
                        for f, p in map(_export_spec, EXPORT["formats"]) if p != "int8"],
    output:
        out("reports/compression.md"),
    threads: workflow.cores
    log:
        out("logs/compression_benchmark.log"),
    shell:
        # test accuracy of every artefact is in the report (validate); the quantiser's val gate is enough here
        f"python {COMPRESSION_BENCHMARK} --run {{OUT}} --split none --threads 1 2 --bench-seconds 0.3 "
        "--md {output} > {log} 2>&1"


ALL_TARGETS.extend([out("models/student.pt"), out("reports/distill.md"), out("reports/compression.md")])
ALL_TARGETS.extend(INT8_ARTEFACTS)
