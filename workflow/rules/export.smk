# Deployment artefacts: one rule per format, checkpoint -> results/<run>/artefacts/<model>/<format>-<precision>/
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
# meta.json is written last and is each rule's output: its presence means the artefact is complete.
# `export.formats` (config) says which artefacts `all` asks for; the validation matrix reads the
# same key. On hosts that cannot build engines TensorRT entries move to EXPORT_UNBUILT, which the
# matrix shows as "skipped: not built: <why>" rows.
import sys

sys.path.insert(0, workflow.basedir)
from vitedge.export.tensorrt import tensorrt_available
from vitedge.targets import artefact_spec

EXPORT = config.setdefault("export", {})
EXPORT.setdefault("models", ["student"])
EXPORT.setdefault("formats", ["onnx", "ort", "executorch", "coreml-fp16", "tensorrt-fp16"])
EXPORT_PRECISION = "fp32"  # what a bare format name in export.formats means


def _export_spec(item):
    return artefact_spec(item, EXPORT_PRECISION)


_trt_mode = (EXPORT.get("tensorrt") or {}).get("when", "auto")
TENSORRT_OK, TENSORRT_WHY = (True, "") if _trt_mode == "always" else (False, "export.tensorrt.when is never") \
    if _trt_mode == "never" else tensorrt_available()
if not TENSORRT_OK and any(_export_spec(f)[0] == "tensorrt" for f in EXPORT["formats"]):
    # not a failure: the rest of the workflow runs
    print(f"vitedge: TensorRT artefacts skipped on this host ({TENSORRT_WHY})", file=sys.stderr)
    EXPORT_UNBUILT = {(m, *_export_spec(f)): TENSORRT_WHY for m in EXPORT["models"] for f in EXPORT["formats"]
                      if _export_spec(f)[0] == "tensorrt"}
    EXPORT["formats"] = [f for f in EXPORT["formats"] if _export_spec(f)[0] != "tensorrt"]
else:
    EXPORT_UNBUILT = {}
# LiteRT needs litert-torch (compress.smk asked already): where it is missing, skipped rows, not a failure
if LITERT_WHY and any(_export_spec(f)[0] == "litert" for f in EXPORT["formats"]):
    print(f"vitedge: LiteRT artefacts skipped on this host ({LITERT_WHY})", file=sys.stderr)
    EXPORT_UNBUILT.update({(m, *_export_spec(f)): LITERT_WHY for m in EXPORT["models"] for f in EXPORT["formats"]
                           if _export_spec(f)[0] == "litert"})
    EXPORT["formats"] = [f for f in EXPORT["formats"] if _export_spec(f)[0] != "litert"]
EXPORT_UNBUILT.update(QUANTIZE_UNBUILT)


def export_cmd(fmt):
    """The shell command shared by every export rule; per-format options come from config export.<fmt>."""
    opts = {k: v for k, v in (EXPORT.get(fmt) or {}).items() if k != "when"}
    opts_arg = as_json(opts).replace("{", "{{").replace("}", "}}")  # literal braces for Snakemake's formatting
    return ("python -m vitedge.export --checkpoint {input.ckpt} --model-name {wildcards.model} "
            f"--format {fmt} --precision {{wildcards.precision}} --out {OUT}/artefacts "
            f"--opts-json {opts_arg} > {{log}} 2>&1")


rule export_onnx:
    input:
        ckpt=out("models/{model}.pt"),
    output:
        out("artefacts/{model}/onnx-{precision}/meta.json"),
    wildcard_constraints:
        model="teacher|student",
        precision="fp32|fp16",
    log:
        out("logs/export/{model}-onnx-{precision}.log"),
    shell:
        export_cmd("onnx")


rule export_ort:
    input:
        ckpt=out("models/{model}.pt"),
        onnx=out("artefacts/{model}/onnx-{precision}/meta.json"),  # the .ort is this ONNX, converted
    output:
        out("artefacts/{model}/ort-{precision}/meta.json"),
    wildcard_constraints:
        model="teacher|student",
        precision="fp32|fp16|int8",
    log:
        out("logs/export/{model}-ort-{precision}.log"),
    shell:
        export_cmd("ort")


rule export_executorch:
    input:
        ckpt=out("models/{model}.pt"),
    output:
        out("artefacts/{model}/executorch-{precision}/meta.json"),
    wildcard_constraints:
        model="teacher|student",
        precision="fp32",
    log:
        out("logs/export/{model}-executorch-{precision}.log"),
    shell:
        export_cmd("executorch")


rule export_coreml:
    input:
        ckpt=out("models/{model}.pt"),
    output:
        out("artefacts/{model}/coreml-{precision}/meta.json"),
    wildcard_constraints:
        model="teacher|student",
        precision="fp32|fp16",
    log:
        out("logs/export/{model}-coreml-{precision}.log"),
    shell:
        export_cmd("coreml")


rule export_litert:
    input:
        ckpt=out("models/{model}.pt"),
    output:
        out("artefacts/{model}/litert-{precision}/meta.json"),
    wildcard_constraints:
        model="teacher|student",
        precision="fp32",
    log:
        out("logs/export/{model}-litert-{precision}.log"),
    shell:
        export_cmd("litert")


rule export_tensorrt:
    input:
        ckpt=out("models/{model}.pt"),
    output:
        out("artefacts/{model}/tensorrt-{precision}/meta.json"),
    wildcard_constraints:
        model="teacher|student",
        precision="fp32|fp16",
    resources:
        gpu=1,
    log:
        out("logs/export/{model}-tensorrt-{precision}.log"),
    shell:
        export_cmd("tensorrt")


ALL_TARGETS.extend(
    out(f"artefacts/{model}/{fmt}-{prec}/meta.json")
    for model in EXPORT["models"]
    for fmt, prec in map(_export_spec, EXPORT["formats"])
    if prec != "int8"  # int8 artefacts are the quantiser's targets
)
