# Compression: DeiT distillation of the student from the fine-tuned teacher, then accuracy-gated int8.
#
#   models/student.pt + reports/distill.{md,json}   vitedge.distill (teacher vs student table)
#   artefacts/<model>/<format>-int8/meta.json        vitedge.quantize, one job per model x format
#
# int8 formats: QUANTIZE_FORMATS, those with an `int8` backend in vitedge.artefact.FORMAT_TABLE (the
# recipes: vitedge.quantize). The TensorRT engine is built only where TensorRT and a GPU are, so tensorrt
# is not in the default `quantize.formats`; litert needs `vitedge[litert]` (where litert-torch is missing
# its rows say "skipped: not built"). Each job fails only when no int8 variant, even with the greedy
# float fallback, stays within `quantize.max_drop` points of fp32 on val.


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
        data=data_dir,
        model=model_json("student"),
        train=as_json(config["distill"]),
        device=config["compute"]["device"],
    threads: workflow.cores
    conda:
        "../envs/vitedge.yaml"
    log:
        out("logs/distill.log"),
    shell:
        "{params.cmd} --data {params.data} --teacher {input.teacher} --out {output.model} --model-json {params.model} "
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
        data=data_dir,
        root=artefact_root,
        cfg=lambda w: as_json(quantize_options(w.fmt)),
    # the whole machine: every variant is timed against fp32, and a job beside it would skew that
    threads: workflow.cores
    conda:
        "../envs/vitedge.yaml"
    log:
        out("logs/quantize/{model}-{fmt}.log"),
    shell:
        "python -m vitedge.quantize --checkpoint {input.ckpt} --model-name {wildcards.model} --format {wildcards.fmt} "
        "--data {params.data} --out {params.root} --config-json {params.cfg} > {log} 2>&1"


INT8_ARTEFACTS = [out(f"artefacts/{model}/{fmt}-int8/meta.json") for model in QUANTIZE["models"] for fmt in QUANTIZE_BUILT]


rule compression_benchmark:
    """fp32 vs int8 per format: accuracy, size, latency (`python -m vitedge.benchmarks.compression` prints the
    same table by hand), and what a user gains per runtime: int8 vs fp32 of the same runtime and every
    artefact vs torch eager fp32, batch 1 and batch 32, 1 and 2 threads, measured in this job."""
    input:
        INT8_ARTEFACTS,
        # the fp32 artefacts the speed table compares with (export.smk's)
        fp32=[out(f"artefacts/{m}/{f}-{p}/meta.json") for m in EXPORT["models"]
              for f, p in map(export_spec, EXPORT_BUILT) if p != "int8"],
    output:
        out("reports/compression.md"),
    params:
        run=run_dir,
    threads: workflow.cores
    conda:
        "../envs/vitedge.yaml"
    log:
        out("logs/compression_benchmark.log"),
    shell:
        # test accuracy of every artefact is in the report (validate); the quantiser's val gate is enough here
        "python -m vitedge.benchmarks.compression --run {params.run} --split none --threads 1 2 "
        "--bench-seconds 0.3 --md {output} > {log} 2>&1"


ALL_TARGETS.extend([out("models/student.pt"), out("reports/distill.md"), out("reports/compression.md")])
ALL_TARGETS.extend(INT8_ARTEFACTS)
