"""ONNX export: one self-contained `.onnx` file with a dynamic batch, from the shared torch.export program.

The dynamo exporter is used (not TorchScript): its graph is ~4x smaller (LayerNormalization
stays one node, SDPA becomes MatMul/Softmax) and it takes the same `ExportedProgram` the other
formats start from. It writes weights to a side `.onnx.data` file unless told otherwise; every
vitedge ONNX file holds its weights, so a single file can be copied to a device.

The file carries its own description in `metadata_props` (classes, preprocessing, source hash),
so an ONNX file separated from its meta.json is still usable.

fp16 converts weights and activations to half, keeping float32 graph inputs/outputs so every
runtime feeds the same tensors. The ORT transformer optimiser (`optimize_onnx`) fuses
LayerNorm+residual and bias+GELU; it is applied only when it measures faster here.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from vitedge.export.common import (DEFAULT_MAX_BATCH, INPUT_NAME, OUTPUT_NAME, example_input, export_program)
from vitedge.io import atomic_path

log = logging.getLogger(__name__)
BATCH_DIM = "batch"


def export_onnx(model: torch.nn.Module | torch.export.ExportedProgram, path: str | Path, info: dict[str, Any],
                opset: int = 17, max_batch: int = DEFAULT_MAX_BATCH, fp16: bool = False) -> Path:
    """Write `model` (a module, or an ExportedProgram such as a quantised one) to one `.onnx` file.

    Input `input` (batch, C, H, W) float32, output `logits` (batch, classes) float32.
    `info` is the checkpoint info (config, preprocess, classes, sha256) recorded in the file.
    """
    import onnx

    program = model if isinstance(model, torch.export.ExportedProgram) else export_program(model, max_batch=max_batch)
    path = Path(path)
    with atomic_path(path, suffix=".onnx") as tmp:
        onnx_program = torch.onnx.export(program, (example_input(info["config"]),), dynamo=True, opset_version=opset,
                                         input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], optimize=True,
                                         verbose=False)
        if onnx_program is None:  # only when given a path to write to, which we never do
            raise RuntimeError("torch.onnx.export returned no program")
        proto = onnx_program.model_proto  # in memory: nothing written beside the target
        _name_batch_dim(proto)
        if fp16:
            proto = _to_fp16(proto)
        _set_metadata(proto, info, fp16)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save_model(proto, tmp, save_as_external_data=False)
    return path


def _name_batch_dim(proto) -> None:
    """torch names the dynamic dim after its symbol ('s77'); call it 'batch' everywhere it appears."""
    first = proto.graph.input[0].type.tensor_type.shape.dim[0]
    symbol = first.dim_param
    if not symbol:
        return
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == symbol:
                dim.dim_param = BATCH_DIM


def _to_fp16(proto):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from onnxruntime.transformers.onnx_model import OnnxModel

    # keep_io_types: callers feed and read float32, whatever the precision inside
    proto = convert_float_to_float16(proto, keep_io_types=True)
    fixed = OnnxModel(proto)
    fixed.topological_sort()  # the converter appends its input casts at the end of the node list
    return fixed.model


def _set_metadata(proto, info: dict[str, Any], fp16: bool) -> None:
    import vitedge

    props = {
        "vitedge.classes": json.dumps(list(info["classes"])),
        "vitedge.preprocess": json.dumps(info["preprocess"]),
        "vitedge.config": json.dumps(info["config"]),
        "vitedge.source_sha256": info.get("sha256", ""),
        "vitedge.precision": "fp16" if fp16 else "fp32",
    }
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name, proto.producer_version = "vitedge", vitedge.__version__
    proto.doc_string = (f"Vision Transformer facial-emotion classifier ({len(info['classes'])} classes); "
                        f"input: normalised grayscale {info['config']['img_size']}px faces, see vitedge.preprocess")


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The vitedge metadata_props of an ONNX file (without loading the weights twice)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


# --------------------------------------------------------------------------- ORT transformer fusion
def _median_latency_ms(model: str | Path | bytes, x, runs: int = 30, threads: int = 1) -> float:
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), so,
                                providers=["CPUExecutionProvider"])
    feed = {INPUT_NAME: x}
    for _ in range(5):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def optimize_onnx(path: str | Path, config: dict[str, Any], mode: str = "auto", min_gain: float = 0.05) -> dict[str, Any]:
    """Run ONNX Runtime's transformer optimiser on `path`; keep the result if it is >= min_gain faster.

    mode: "auto" (measure, keep if faster), "on" (always keep), "off" (do nothing).
    Returns a record for meta.json. The fused graph uses com.microsoft ops (SkipLayerNormalization,
    BiasGelu ...) that only ONNX Runtime runs, so it is never used as the source of a TensorRT engine.
    """
    if mode == "off":
        return {"applied": False, "mode": mode}
    from onnxruntime.transformers.optimizer import optimize_model

    path = Path(path)
    optimized = optimize_model(str(path), model_type="vit", num_heads=config["num_heads"],
                               hidden_size=config["embed_dim"], opt_level=1, use_gpu=False)
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    record: dict[str, Any] = {"mode": mode, "fused": fused}
    fused_bytes = optimized.model.SerializeToString()
    if mode == "auto":
        x = example_input(config, 1).numpy()
        before, after = _median_latency_ms(path, x), _median_latency_ms(fused_bytes, x)
        record.update(ms_before=round(before, 3), ms_after=round(after, 3))
        keep = after <= before * (1 - min_gain)
    else:
        keep = True
    record["applied"] = bool(keep and fused)
    if record["applied"]:
        with atomic_path(path, suffix=".onnx") as tmp:
            tmp.write_bytes(fused_bytes)
    log.info("ORT transformer optimiser: %s", record)
    return record


# --------------------------------------------------------------------------- artefact builder
PRECISIONS = ("fp32", "fp16")  # exported from a checkpoint; int8 is the quantiser's (accuracy gate)


def build(model: torch.nn.Module, info: dict[str, Any], art_dir: Path, precision: str,
          opset: int = 17, optimize: str = "auto", **_: Any) -> tuple[str, dict[str, Any]]:
    """The `onnx-<precision>` artefact: model.onnx (+ optional ORT fusion, fp32 only)."""
    path = export_onnx(model, art_dir / "model.onnx", info, opset=opset, fp16=precision == "fp16")
    extras: dict[str, Any] = {"opset": opset}
    if precision == "fp32":
        # fp16 graphs are for GPUs (CUDA EP, TensorRT): CPU timings would not say whether fusion helps there
        extras["ort_optimizer"] = optimize_onnx(path, info["config"], mode=optimize)
    return path.name, extras
