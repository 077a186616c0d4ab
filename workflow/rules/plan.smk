# What this run builds and checks, decided once from the config and this host:
#
#   EXPORT_BUILT / QUANTIZE_BUILT   export.formats / quantize.formats this host can build
#   UNBUILT                         (model, format, precision) -> why not: "skipped: not built" rows
#   TARGETS, PAIRS                  runtimes/<target>.yaml and the (model, format, precision, target)
#                                   validations (vitedge.targets.matrix: the same pairs as the report's)
#
# Formats and precisions are vitedge's own: vitedge.artefact.FORMAT_TABLE, read through vitedge.plan
# (the same functions the Snakefile's schema and tests/test_formats.py use), so the rules, the schema
# and the package cannot drift apart. The training checkpoint (models/<model>.pt) is the artefact key
# `checkpoint-fp32` (vitedge.artefact.CHECKPOINT).
import importlib.util
import sys

from vitedge.artefact import CHECKPOINT, PRECISIONS
from vitedge.hosts import tensorrt_available
from vitedge.plan import (
    artefact_format_re,
    export_format_re,
    export_gpu,
    export_input,
    export_precisions,
    quantize_formats,
)
from vitedge.targets import artefact_spec, load_target, matrix

QUANTIZE = config["quantize"]
EXPORT = config["export"]
VALIDATE = config["validate"]

# int8 formats: one quantiser backend each; their names are also the per-format keys of `quantize`
QUANTIZE_FORMATS = quantize_formats()
# workflow keys, not QuantizeConfig fields: per-format overrides are merged over the shared settings
QUANTIZE_LAYOUT = ("models", "formats", *QUANTIZE_FORMATS)
EXPORT_PRECISION = "fp32"  # what a bare format name in export.formats means
# what `python -m vitedge.export` builds from a checkpoint, per format: int8 is the quantiser's (with
# its accuracy gate), except ort-int8, which converts the quantiser's onnx-int8; "torch" (a .pt2
# program) comes only from the quantiser
EXPORT_PRECISIONS = export_precisions()
# the export rule's {fmt} constraint: a format only where the precision after it is one it is exported in
EXPORT_FORMAT_RE = export_format_re()
# the validate rule's {fmt}: every artefact format and the checkpoint
ARTEFACT_FORMAT_RE = artefact_format_re()


def export_spec(item):
    """An export.formats entry -> (format, precision)."""
    return artefact_spec(item, EXPORT_PRECISION)


def export_options(fmt):
    """export.<fmt> as the exporter takes it (`when` is the workflow's, not the exporter's)."""
    return {k: v for k, v in EXPORT[fmt].items() if k != "when"}


def quantize_options(fmt):
    """The QuantizeConfig for one format: the shared settings, then quantize.<fmt> over them."""
    shared = {k: v for k, v in QUANTIZE.items() if k not in QUANTIZE_LAYOUT}
    # Core ML int8 targets the OS the Core ML export targets, unless quantize.coreml says otherwise
    inherited = {}
    if fmt == "coreml" and "deployment_target" in EXPORT["coreml"]:
        inherited["deployment_target"] = EXPORT["coreml"]["deployment_target"]
    return {**shared, **inherited, **QUANTIZE[fmt]}


def litert_missing():
    """None when litert-torch (and the LiteRT interpreter) are installed, else why not."""
    missing = [p for m, p in (("litert_torch", "litert-torch"), ("ai_edge_litert", "ai-edge-litert"),
                              ("ai_edge_quantizer", "ai-edge-quantizer")) if importlib.util.find_spec(m) is None]
    return f"{', '.join(missing)} not installed (pip install 'vitedge[litert]')" if missing else None


def tensorrt_missing(when):
    """None when TensorRT engines are built here (export.tensorrt.when), else why not."""
    if when == "always":
        return None
    if when == "never":
        return "export.tensorrt.when is never"
    ok, why = tensorrt_available()
    return None if ok else why


def target_file(name):
    """A target name (runtimes/<name>.yaml beside the Snakefile) or a path to a target file."""
    return name if name.endswith((".yaml", ".yml")) else os.path.join(workflow.basedir, "runtimes", f"{name}.yaml")


def artefact_path(model, fmt, prec):
    """The file whose presence means the artefact is complete: the checkpoint, or meta.json (written last)."""
    if fmt == CHECKPOINT:
        return out(f"models/{model}.pt")
    return out(f"artefacts/{model}/{fmt}-{prec}/meta.json")


def artefact_input(wildcards):
    """A validation's artefact: none for one this host could not build."""
    if (wildcards.model, wildcards.fmt, wildcards.prec) in UNBUILT:
        return []
    return artefact_path(wildcards.model, wildcards.fmt, wildcards.prec)


def artefact_arg(wildcards):
    """--artefact PATH, or --unbuilt for an artefact this host could not build."""
    key = (wildcards.model, wildcards.fmt, wildcards.prec)
    if key in UNBUILT:
        return f"--artefact none --unbuilt {shlex.quote(f'{wildcards.model}:{wildcards.fmt}-{wildcards.prec}:{UNBUILT[key]}')}"
    return f"--artefact {shlex.quote(artefact_path(*key))}"


def workflow_artefacts():
    """(model, format, precision) of everything the workflow builds: each model's checkpoint, the
    exports and the int8 artefacts, and the artefacts this host cannot build (skipped rows)."""
    built = [(m, CHECKPOINT, "fp32") for m in config["models"]]
    built += [(m, *export_spec(f)) for m in EXPORT["models"] for f in EXPORT_BUILT]
    built += [(m, f, "int8") for m in QUANTIZE["models"] for f in QUANTIZE_BUILT]
    return list(dict.fromkeys([*built, *UNBUILT]))


# ---------------------------------------------------------------- what this host cannot build
# Not failures: the rest of the workflow runs, and the validation matrix shows these as skipped rows.
LITERT_WHY = litert_missing()
TENSORRT_WHY = tensorrt_missing(EXPORT["tensorrt"]["when"])
# an exported format this host cannot build (TensorRT: engines; LiteRT: litert-torch) -> why
EXPORT_SKIPPED = {f: why for f, why in (("tensorrt", TENSORRT_WHY), ("litert", LITERT_WHY)) if why}
# int8: LiteRT only (the TensorRT quantiser writes its Q/DQ ONNX anywhere and builds an engine where it can)
QUANTIZE_SKIPPED = {"litert": LITERT_WHY} if LITERT_WHY else {}

EXPORT_BUILT = [f for f in EXPORT["formats"] if export_spec(f)[0] not in EXPORT_SKIPPED]
QUANTIZE_BUILT = [f for f in QUANTIZE["formats"] if f not in QUANTIZE_SKIPPED]
UNBUILT = {(m, *export_spec(f)): why for fmt, why in EXPORT_SKIPPED.items()
           for m in EXPORT["models"] for f in EXPORT["formats"] if export_spec(f)[0] == fmt}
UNBUILT.update({(m, f, "int8"): QUANTIZE_SKIPPED[f] for m in QUANTIZE["models"] for f in QUANTIZE["formats"]
                if f in QUANTIZE_SKIPPED})
for fmt, why in EXPORT_SKIPPED.items():
    if any(export_spec(f)[0] == fmt for f in EXPORT["formats"]):
        print(f"vitedge: {'TensorRT' if fmt == 'tensorrt' else 'LiteRT'} artefacts skipped on this host ({why})",
              file=sys.stderr)
if QUANTIZE_SKIPPED and "litert" in QUANTIZE["formats"]:
    print(f"vitedge: LiteRT int8 skipped on this host ({LITERT_WHY})", file=sys.stderr)

# ---------------------------------------------------------------- validation matrix
TARGETS = {t.name: t for t in map(load_target, map(target_file, VALIDATE["targets"]))}
PAIRS = matrix(list(TARGETS.values()), workflow_artefacts())
VALIDATIONS = [out(f"validation/{m}-{f}-{p}@{t}.json") for m, f, p, t in PAIRS]
