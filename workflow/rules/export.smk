# Deployment artefacts: one rule for every format, checkpoint -> results/<run>/artefacts/<model>/<format>-<precision>/
#
#   onnx        fp32 | fp16   model.onnx (weights inside, dynamic batch; + ORT fusion if faster)
#   ort         fp32 | fp16 | int8   model.ort, converted from the onnx artefact of the same precision
#                             (int8: from the quantiser's onnx-int8)
#   executorch  fp32          model.pte, XNNPACK (int8 comes from the quantiser)
#   coreml      fp32 | fp16   model.mlpackage (int8 weights: the quantiser, with its accuracy gate)
#   tensorrt    fp32 | fp16   model-<gpu>-sm<cc>-trt<ver>.engine + its ONNX; only where TensorRT and a GPU are
#   litert      fp32          model.tflite (litert-torch, batch 1; int8 comes from the quantiser); only where
#                             `vitedge[litert]` is installed, else skipped rows
#
# (EXPORT_PRECISIONS in plan.smk.) meta.json is written last and is the rule's output: its presence
# means the artefact is complete. `export.formats` (config) says which artefacts `all` asks for; the
# validation matrix reads the same key. Formats this host cannot build (TensorRT without TensorRT
# and a GPU, LiteRT without litert-torch) are UNBUILT: "skipped: not built: <why>" rows.


rule export:
    input:
        ckpt=out("models/{model}.pt"),
        # the .ort is the ONNX artefact of the same precision, converted
        onnx=lambda w: out(f"artefacts/{w.model}/onnx-{w.precision}/meta.json") if w.fmt == "ort" else [],
    output:
        out("artefacts/{model}/{fmt}-{precision}/meta.json"),
    wildcard_constraints:
        model="teacher|student",
        fmt=EXPORT_FORMAT_RE,  # each format with the precisions it is exported in
        precision="|".join(PRECISIONS),
    params:
        root=artefact_root,
        opts=lambda w: as_json(export_options(w.fmt)),
    resources:
        # TensorRT builds its engine on the GPU (no limit locally; --gpus on SLURM)
        gpu=lambda w: int(w.fmt == "tensorrt"),
    conda:
        "../envs/vitedge.yaml"
    log:
        out("logs/export/{model}-{fmt}-{precision}.log"),
    shell:
        "python -m vitedge.export --checkpoint {input.ckpt} --model-name {wildcards.model} --format {wildcards.fmt} "
        "--precision {wildcards.precision} --out {params.root} --opts-json {params.opts} > {log} 2>&1"


ALL_TARGETS.extend(
    out(f"artefacts/{model}/{fmt}-{prec}/meta.json")
    for model in EXPORT["models"]
    for fmt, prec in map(export_spec, EXPORT_BUILT)
    if prec != "int8"  # int8 artefacts are the quantiser's targets
)
