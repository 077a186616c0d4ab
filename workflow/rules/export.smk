# Deployment artefacts: one rule for every format, checkpoint -> results/<run>/artefacts/<model>/<format>-<precision>/
#
# What each format is exported in, what it is built from and whether it needs the GPU is
# vitedge.artefact.FORMAT_TABLE's (EXPORT_PRECISIONS, export_input, export_gpu in plan.smk, from
# vitedge.plan): int8 comes from the quantiser wherever a format has an int8 backend (its accuracy
# gate); ort-int8 converts the quantiser's onnx-int8. meta.json is written last and is the rule's
# output: its presence means the artefact is complete. `export.formats` (config) says which artefacts
# `all` asks for; the validation matrix reads the same key. Formats this host cannot build (TensorRT
# without TensorRT and a GPU, LiteRT without litert-torch) are UNBUILT: "skipped: not built: <why>" rows.


rule export:
    input:
        ckpt=out("models/{model}.pt"),
        # e.g. the .ort is the ONNX artefact of the same precision, converted
        source=lambda w: (out(f"artefacts/{w.model}/{export_input(w.fmt)}-{w.precision}/meta.json")
                          if export_input(w.fmt) else []),
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
        # e.g. TensorRT builds its engine on the GPU (no limit locally; --gpus on SLURM)
        gpu=lambda w: export_gpu(w.fmt),
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
