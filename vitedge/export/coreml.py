"""Core ML `.mlpackage` (ML program) for iOS/macOS, converted from torch.export.

What an app developer gets: a classifier whose input is an 8-bit grayscale image (Vision /
`CVPixelBuffer` can feed it directly; Core ML applies our normalisation through the ImageType
scale and bias), whose outputs are `classLabel` and `classLabel_probs` (softmax probabilities,
so Xcode's preview and Vision show real confidences), and whose metadata says what it was
trained on and under which licence.

The softmax means the Core ML runtime returns log-probabilities as its "logits": they differ
from the PyTorch logits by a per-row constant and give the same softmax, argmax and top-k.

Precisions: fp32 / fp16 (compute precision of the ML program) and int8 (fp16 model with
per-channel symmetric int8 weights via `coremltools.optimize.coreml.linear_quantize_weights`,
a format step; the quantiser owns accuracy gates). Core ML predicts only on macOS, so on
Linux `verify` checks the spec and reads every weight back against the PyTorch model.

The quantiser (`vitedge.quantize.coreml`) builds its int8 packages with the same settings:
`weight_quantization` (the int8 recipe) and `artefact_extras` (meta.json, including the
configured minimum deployment target) are shared, not repeated.

coremltools is an optional toolchain (the export extra): imported in the functions that convert
or read packages, so `vitedge.export` works without it.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from vitedge import __version__
from vitedge.artefact import ArtefactError, training_data
from vitedge.export.common import example_input
from vitedge.io import atomic_path
from vitedge.preprocess import Preprocess

INPUT_NAME = "image"
LABEL_OUTPUT, PROBS_OUTPUT = "classLabel", "classLabel_probs"
WEIGHT_PREFIX = "p_model_"  # torch.export names a parameter p_<attribute path>; our wrapper holds `model`
MIN_WEIGHT = 2048  # coremltools' own threshold: smaller tensors stay fp16/fp32, never int8
AUTHOR = "vitedge"
DEFAULT_DEPLOYMENT_TARGET = "iOS16"  # ML programs need iOS 15+; 16 adds the fp16 image input path


class _Probabilities(torch.nn.Module):
    """Logits -> softmax probabilities, as Core ML classifiers are expected to output."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=-1)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """coremltools draws several tqdm progress bars per conversion (on stderr, with no switch to
    turn them off); keep logs and --json output clean. Failures still raise."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def weight_quantization(keep_float: list[str] | None = None):
    """The int8 recipe (per-channel symmetric int8 weights, tensors >= MIN_WEIGHT elements); ops named in
    `keep_float` stay in float (the quantiser's fallback)."""
    from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig  # optional toolchain

    config = OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                     weight_threshold=MIN_WEIGHT)
    return OptimizationConfig(global_config=config, op_name_configs={name: None for name in keep_float or ()})


def quantize_weights(mlmodel, keep_float: list[str] | None = None):
    """`mlmodel` with int8 weights (`weight_quantization`)."""
    from coremltools.optimize.coreml import linear_quantize_weights  # optional toolchain

    with quiet():
        return linear_quantize_weights(mlmodel, weight_quantization(keep_float))


def artefact_extras(precision: str, deployment_target: str = DEFAULT_DEPLOYMENT_TARGET) -> dict[str, Any]:
    """meta.json fields of a Core ML artefact (exported or quantised alike)."""
    extras: dict[str, Any] = {
        "max_batch": 1, "coreml": {"input": INPUT_NAME, "input_kind": "grayscale image (uint8)",
                                   "logits_output": PROBS_OUTPUT, "output_kind": "probabilities",
                                   "minimum_deployment_target": deployment_target},
        "logits_normalised": True}  # the runtime returns log-probabilities (see module docstring)
    if precision == "int8":
        extras["quantization"] = {"method": "coremltools linear_quantize_weights", "weights": "int8",
                                  "granularity": "per_channel", "mode": "linear_symmetric",
                                  "weight_threshold": MIN_WEIGHT, "activations": "fp16"}
    return extras


def convert_coreml(model_or_program: torch.nn.Module | torch.export.ExportedProgram, info: dict[str, Any],
                   precision: str = "fp16", deployment_target: str = DEFAULT_DEPLOYMENT_TARGET):
    """A vitedge model (or a batch-1 ExportedProgram of `softmax(model(x))`) -> coremltools MLModel."""
    import coremltools as ct  # optional toolchain

    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"unknown Core ML precision '{precision}'")
    if isinstance(model_or_program, torch.export.ExportedProgram):
        program = model_or_program
    else:
        wrapped = _Probabilities(model_or_program.eval()).eval()
        with torch.no_grad():  # one image per prediction: Core ML image inputs are single images
            program = torch.export.export(wrapped, (example_input(info["config"], 1),))
    program = program.run_decompositions({})  # coremltools converts ATen (core) ops
    cfg, pre = info["config"], Preprocess.from_dict(info["preprocess"])
    scale, bias = pre.coreml_scale_bias()
    color = ct.colorlayout.GRAYSCALE if cfg["in_chans"] == 1 else ct.colorlayout.RGB
    size = cfg["img_size"]
    with quiet():
        mlmodel = ct.convert(
            program,
            inputs=[ct.ImageType(name=INPUT_NAME, shape=(1, cfg["in_chans"], size, size), scale=scale, bias=bias,
                                 color_layout=color)],
            classifier_config=ct.ClassifierConfig(list(info["classes"])),
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
            minimum_deployment_target=getattr(ct.target, deployment_target),
        )
    if precision == "int8":
        mlmodel = quantize_weights(mlmodel)
    _describe(mlmodel, info, precision)
    return mlmodel


def _describe(mlmodel, info: dict[str, Any], precision: str) -> None:
    """What Xcode shows: description, author, licence, version, input/output docs, plus vitedge metadata."""
    data = training_data(info)
    size = info["config"]["img_size"]
    mlmodel.short_description = (f"Facial emotion recognition (Vision Transformer, {precision}): "
                                 f"{', '.join(info['classes'])}. Input: a {size}x{size} grayscale face crop.")
    mlmodel.author = AUTHOR
    mlmodel.license = data["license"]
    mlmodel.version = __version__
    mlmodel.input_description[INPUT_NAME] = (f"{size}x{size} grayscale face crop (detected face plus ~20% margin); "
                                             "normalisation is built in")
    mlmodel.output_description[LABEL_OUTPUT] = "most likely emotion"
    mlmodel.output_description[PROBS_OUTPUT] = "probability of each emotion"
    meta = mlmodel.user_defined_metadata
    meta["vitedge.classes"] = json.dumps(list(info["classes"]))
    meta["vitedge.preprocess"] = json.dumps(info["preprocess"])
    meta["vitedge.source_sha256"] = info.get("sha256", "")
    meta["vitedge.training_data"] = data["kind"]
    meta["vitedge.precision"] = precision


def save_mlpackage(mlmodel, path: str | Path) -> Path:
    """Save an MLModel as a `.mlpackage` directory, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # coremltools insists on the .mlpackage extension, which atomic_path's temp name lacks:
    # save under a scratch folder beside the target, then rename into place atomically
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".coreml-") as scratch:
        saved = Path(scratch) / path.name
        with quiet():
            mlmodel.save(str(saved))
        with atomic_path(path) as tmp:
            os.replace(saved, tmp)
    return path


def build(model: torch.nn.Module, info: dict[str, Any], art_dir: Path, precision: str,
          deployment_target: str = DEFAULT_DEPLOYMENT_TARGET, **_: Any) -> tuple[str, dict[str, Any]]:
    path = save_mlpackage(convert_coreml(model, info, precision, deployment_target), art_dir / "model.mlpackage")
    return path.name, artefact_extras(precision, deployment_target)


# --------------------------------------------------------------------------- verification on any OS
def read_program(path: str | Path):
    """(MLModel without loading Core ML, its MIL program): what can be inspected on Linux."""
    import coremltools as ct  # optional toolchain
    from coremltools.converters.mil.frontend.milproto.load import load as load_mil

    mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    spec = mlmodel.get_spec()
    return mlmodel, load_mil(spec, specification_version=spec.specificationVersion,
                             file_weights_dir=mlmodel.weights_dir)


def ops(program) -> Iterator[Any]:
    """Every operation of every function of a MIL program."""
    for function in program.functions.values():
        yield from function.operations


def read_weights(program) -> dict[str, np.ndarray]:
    """Every constant tensor of >= MIN_WEIGHT elements in the program, dequantised, as float32.

    Names are the torch.export parameter names (`p_model_blocks_0_attn_qkv_weight`), with
    coremltools' cast / quantisation suffixes removed.
    """
    out: dict[str, np.ndarray] = {}
    for op in ops(program):
        if op.op_type == "const":
            value = op.outputs[0].val
        elif op.op_type == "constexpr_affine_dequantize":
            q, zp, scale = (op.inputs[k].val for k in ("quantized_data", "zero_point", "scale"))
            shape = [1] * q.ndim
            shape[int(op.inputs["axis"].val)] = -1
            value = (q.astype(np.float32) - np.reshape(zp, shape).astype(np.float32)) * np.reshape(scale, shape)
        elif op.op_type.startswith("constexpr"):
            value = op.value_inference()  # other compression ops know how to expand themselves
        else:
            continue
        if isinstance(value, np.ndarray) and value.size >= MIN_WEIGHT:
            name = op.name
            for suffix in ("_quantized", "_to_fp16", "_to_fp32"):
                name = name.removesuffix(suffix)
            out[name] = np.asarray(value, dtype=np.float32)
    return out


def class_labels(program) -> list[str]:
    for op in ops(program):
        if op.op_type == "classify":
            return [str(c) for c in op.inputs["classes"].val]
    return []


def verify(art_dir: Path, meta: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """Spec (image input, class labels, outputs, licence) and weights read back vs the torch model.

    Tolerances: fp32 relative 1e-6, fp16 relative 1e-3, int8 within half a quantisation step
    (per output channel, symmetric: step = max|w| / 127; 0.6 allows for the fp16 rounding before it).
    """
    path = art_dir / meta["file"]
    mlmodel, program = read_program(path)
    desc = mlmodel.get_spec().description
    problems = []
    image = desc.input[0].type.imageType
    size = meta["config"]["img_size"]
    if desc.input[0].name != INPUT_NAME or (image.width, image.height) != (size, size):
        problems.append(f"input is {desc.input[0].name} {image.width}x{image.height}, "
                        f"expected {INPUT_NAME} {size}x{size}")
    labels = class_labels(program)
    if labels != list(meta["classes"]):
        problems.append(f"class labels {labels} != {meta['classes']}")
    if {o.name for o in desc.output} != {LABEL_OUTPUT, PROBS_OUTPUT}:
        problems.append(f"outputs are {[o.name for o in desc.output]}, expected {LABEL_OUTPUT}, {PROBS_OUTPUT}")
    if not desc.metadata.license:
        problems.append("no licence in the model metadata")

    weights = read_weights(program)
    torch_weights = {n.replace(".", "_"): p.detach().float().numpy()
                     for n, p in model.named_parameters() if p.numel() >= MIN_WEIGHT}
    worst = 0.0
    for name, ref in torch_weights.items():
        got = weights.get(WEIGHT_PREFIX + name)
        if got is None or got.shape != ref.shape:
            problems.append(f"weight {name} missing or misshapen in the .mlpackage")
            continue
        if meta["precision"] == "int8" and ref.ndim >= 2:
            # per output channel: max|w| / 127 is the step; rounding errs by at most half of it, plus
            # up to ~0.1 step because coremltools quantises the fp16-rounded weights with an fp16 scale
            step = np.abs(ref).reshape(ref.shape[0], -1).max(axis=1) / 127.0
            err = float((np.abs(got - ref).reshape(ref.shape[0], -1).max(axis=1) / np.maximum(step, 1e-12)).max())
            limit = 0.6
        else:
            limit = 1e-6 if meta["precision"] == "fp32" else 1e-3
            err = float((np.abs(got - ref) / np.maximum(np.abs(ref), 1e-2)).max())  # floored for ~0 weights
        worst = max(worst, err)
        if err > limit:
            problems.append(f"weight {name} differs from torch: {err:.3g} > {limit}")
    if problems:
        raise ArtefactError(f"{path}: " + "; ".join(problems))
    unit = "quantisation steps" if meta["precision"] == "int8" else "relative"
    return {"coreml_spec": {"input": f"{INPUT_NAME}: {size}x{size} image", "labels": labels,
                            "license": desc.metadata.license},
            "coreml_weights": {"checked": len(torch_weights), "max_error": worst, "unit": unit}}
