"""ONNX export: one self-contained `.onnx` file with a dynamic batch, from the shared torch.export program.

The dynamo exporter is used (not TorchScript): its graph is ~4x smaller (LayerNormalization
stays one node, SDPA becomes MatMul/Softmax) and it takes the same `ExportedProgram` the other
formats start from. It writes weights to a side `.onnx.data` file unless told otherwise; every
vitedge ONNX file holds its weights, so a single file can be copied to a device.

The file carries its own description in `metadata_props` (classes, preprocessing, source hash),
so an ONNX file separated from its meta.json is still usable.

fp16 converts weights and activations to half, keeping float32 graph inputs/outputs so every
runtime feeds the same tensors. The transformer fusion (`optimize_onnx`: each block's attention
into one com.microsoft Attention node, bias+GELU into BiasGelu) is applied only when it measures
faster here; `ort_session` in meta.json records session settings it runs best with.
"""
from __future__ import annotations

import json
import logging
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.onnx_model import OnnxModel
from onnxruntime.transformers.optimizer import optimize_model

from vitedge import __version__
from vitedge.artefact import DEFAULT_MAX_BATCH, INPUT_NAME, OUTPUT_NAME
from vitedge.bench import measure
from vitedge.export.common import example_input, export_program
from vitedge.io import atomic_path
from vitedge.ort_session import NO_SKIP_LAYERNORM, open_session, predictor

log = logging.getLogger(__name__)
BATCH_DIM = "batch"


def export_onnx(model: torch.nn.Module | torch.export.ExportedProgram, path: str | Path, info: dict[str, Any],
                opset: int = 17, max_batch: int = DEFAULT_MAX_BATCH, fp16: bool = False) -> Path:
    """Write `model` (a module, or an ExportedProgram such as a quantised one) to one `.onnx` file.

    Input `input` (batch, C, H, W) float32, output `logits` (batch, classes) float32.
    `info` is the checkpoint info (config, preprocess, classes, sha256) recorded in the file.
    """

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
    # keep_io_types: callers feed and read float32, whatever the precision inside
    proto = convert_float_to_float16(proto, keep_io_types=True)
    fixed = OnnxModel(proto)
    fixed.topological_sort()  # the converter appends its input casts at the end of the node list
    return fixed.model


def _set_metadata(proto, info: dict[str, Any], fp16: bool) -> None:
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
    proto.producer_name, proto.producer_version = "vitedge", __version__
    proto.doc_string = (f"Vision Transformer facial-emotion classifier ({len(info['classes'])} classes); "
                        f"input: normalised grayscale {info['config']['img_size']}px faces, see vitedge.preprocess")


# --------------------------------------------------------------------------- ORT transformer fusion
def _median_latency_ms(model: str | Path | bytes, x: np.ndarray, settings: dict[str, Any] | None = None) -> float:
    """Batch-1 latency of `model` in a 1-thread ORT session with an artefact's session settings."""
    predict = predictor(open_session(model, threads=1, settings=settings))
    return measure(lambda: predict(x), warmup=5, min_iters=30, max_iters=30).summary_ms()["p50"]


def fuse_attention(proto, num_heads: int, dim: int) -> int:
    """Replace each block's attention (qkv Linear -> reshape/permute/unbind -> SDPA -> transpose/reshape)
    with one com.microsoft `Attention` node (packed qkv weight (D, 3D) and bias, `num_heads`), in place.

    ORT's own optimiser does not recognise the attention torch's dynamo exporter writes (SDPA
    decomposed into Shape/Slice/Concat/Reshape/Mul/MatMul/Softmax: ~25 nodes a block), and at batch 1
    the per-node cost dominates. The fused op is what `quantize_dynamic` turns into QAttention.
    Everything from the qkv Add to the input of the projection MatMul (weight (D, D)) must be that
    attention core (2 MatMuls of activations, 1 Softmax), else the block is left as it is. Returns the
    number of blocks fused; nodes and initializers only the old core used are removed.
    """


    g = proto.graph
    inits = {i.name: tuple(i.dims) for i in g.initializer}
    consumers: dict[str, list] = defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    removed: set[int] = set()
    replace: dict[int, Any] = {}
    for mm in list(g.node):
        if mm.op_type != "MatMul" or inits.get(mm.input[1]) != (dim, 3 * dim):
            continue
        head, start, bias = [mm], mm.output[0], None
        nxt = consumers[start]
        if len(nxt) == 1 and nxt[0].op_type == "Add":
            bias = next((i for i in nxt[0].input if inits.get(i) == (3 * dim,)), None)
            if bias is not None:
                head.append(nxt[0])
                start = nxt[0].output[0]
        core, frontier, seen, proj = [], [start], set(), []
        while frontier:  # everything downstream of qkv up to the projection MatMul(s)
            for n in consumers[frontier.pop()]:
                if id(n) in seen:
                    continue
                seen.add(id(n))
                if n.op_type == "MatMul" and inits.get(n.input[1]) == (dim, dim):
                    proj.append(n)
                    continue
                core.append(n)
                frontier.extend(n.output)
        kinds = [n.op_type for n in core]
        if (len(proj) != 1 or kinds.count("Softmax") != 1 or kinds.count("MatMul") != 2
                or any(n.op_type in ("MatMul", "Gemm", "Conv") and n.input[1] in inits for n in core)
                or not any(proj[0].input[0] in n.output for n in core)):
            continue
        if bias is None:
            bias = f"{mm.name}_qkv_zero_bias"
            g.initializer.append(numpy_helper.from_array(np.zeros(3 * dim, np.float32), bias))
        replace[id(mm)] = helper.make_node("Attention", [mm.input[0], mm.input[1], bias], [proj[0].input[0]],
                                           name=f"{mm.name}_Attention", domain="com.microsoft", num_heads=num_heads)
        removed.update(id(n) for n in head + core)
    if not replace:
        return 0
    nodes = [replace.get(id(n), n) for n in g.node if id(n) in replace or id(n) not in removed]
    graph_outputs = {o.name for o in g.output}
    while True:  # drop what only the old cores read (their Shape/Slice chains)
        used = {i for n in nodes for i in n.input} | graph_outputs
        kept = [n for n in nodes if any(o in used for o in n.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    del g.node[:]
    g.node.extend(nodes)
    live = {t for n in nodes for t in (*n.input, *n.output)}
    for field in (g.initializer, g.value_info):
        keep = [v for v in field if v.name in live]
        del field[:]
        field.extend(keep)
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(replace)


def transformer_fusion(path: str | Path, config: dict[str, Any]):
    """The fused graph as an onnx ModelProto, and what was fused: vitedge's attention fusion, then ORT's
    transformer optimiser (bias + GELU -> BiasGelu ...) without SkipLayerNormalization (see
    NO_SKIP_LAYERNORM)."""


    proto = onnx.load(str(path))
    n_attention = fuse_attention(proto, config["num_heads"], config["embed_dim"])
    options = FusionOptions("vit")
    options.enable_skip_layer_norm = False
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)  # "producer not matched" noise
    with tempfile.TemporaryDirectory() as work:  # the optimiser wants a file (a proto goes via external data)
        src = Path(work) / "attention.onnx"
        onnx.save_model(proto, str(src), save_as_external_data=False)
        optimized = optimize_model(str(src), model_type="vit", num_heads=config["num_heads"],
                                   hidden_size=config["embed_dim"], opt_level=1, use_gpu=False,
                                   optimization_options=options)
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    if n_attention:  # the optimiser counts the Attention nodes it finds, vitedge's included
        fused["Attention"] = max(fused.get("Attention", 0), n_attention)
    return optimized.model, fused


def optimize_onnx(path: str | Path, config: dict[str, Any], mode: str = "auto", min_gain: float = 0.05) -> dict[str, Any]:
    """Fuse the transformer blocks of `path` (`transformer_fusion`); keep the result if it is >= min_gain faster.

    mode: "auto" (measure, keep if faster), "on" (always keep), "off" (do nothing).
    Returns a record for meta.json, with `ort_session`: the session settings the artefact runs best
    with (NO_SKIP_LAYERNORM when measured faster). The fused graph uses com.microsoft ops (Attention,
    BiasGelu ...) that only ONNX Runtime runs, so it is never used as the source of a TensorRT engine.
    """
    if mode == "off":
        return {"applied": False, "mode": mode}
    path = Path(path)
    model, fused = transformer_fusion(path, config)
    record: dict[str, Any] = {"mode": mode, "fused": fused}
    fused_bytes = model.SerializeToString()
    if mode == "auto":
        x = example_input(config, 1).numpy()
        before = _median_latency_ms(path, x)
        after = _median_latency_ms(fused_bytes, x)
        after_no_skip = _median_latency_ms(fused_bytes, x, NO_SKIP_LAYERNORM)
        record.update(ms_before=round(before, 3), ms_after=round(min(after, after_no_skip), 3))
        if after_no_skip < after:
            record["ort_session"] = NO_SKIP_LAYERNORM
        keep = min(after, after_no_skip) <= before * (1 - min_gain)
    else:
        keep = True
        record["ort_session"] = NO_SKIP_LAYERNORM
    record["applied"] = bool(keep and fused)
    if not record["applied"]:
        record.pop("ort_session", None)
    if record["applied"]:
        with atomic_path(path, suffix=".onnx") as tmp:
            tmp.write_bytes(fused_bytes)
    log.info("ORT transformer optimiser: %s", record)
    return record


# --------------------------------------------------------------------------- artefact builder
def build(model: torch.nn.Module, info: dict[str, Any], art_dir: Path, precision: str,
          opset: int = 17, optimize: str = "auto", **_: Any) -> tuple[str, dict[str, Any]]:
    """The `onnx-<precision>` artefact: model.onnx (+ optional ORT fusion, fp32 only)."""
    path = export_onnx(model, art_dir / "model.onnx", info, opset=opset, fp16=precision == "fp16")
    extras: dict[str, Any] = {"opset": opset}
    if precision == "fp32":
        # fp16 graphs are for GPUs (CUDA EP, TensorRT): CPU timings would not say whether fusion helps there
        extras["ort_optimizer"] = optimize_onnx(path, info["config"], mode=optimize)
        if extras["ort_optimizer"].get("ort_session"):
            extras["ort_session"] = extras["ort_optimizer"]["ort_session"]
    return path.name, extras
