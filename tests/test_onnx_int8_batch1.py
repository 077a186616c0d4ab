"""ONNX Runtime at batch 1: vitedge's attention fusion (one com.microsoft Attention node per block) is
exact, leaves the fallback's units intact and is what dynamic int8 turns into QAttention; the
`mixed` int8 variant (static QDQ convs + dynamic matmuls) goes through the gate; the session
settings an artefact records are the ones the runtime uses."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from vitedge import checkpoints, runtimes
from vitedge.data import CLASSES, make_synthetic
from vitedge.export.onnx import export_onnx, fuse_attention, optimize_onnx
from vitedge.model import create_model, fold_batchnorm
from vitedge.ort_session import NO_SKIP_LAYERNORM, open_session
from vitedge.preprocess import Preprocess
from vitedge.quantize.core import model_units

pytestmark = pytest.mark.usefixtures("one_thread")
PRE = Preprocess()


def _export(tmp_path, preset: str, depth: int = 2, **overrides):
    torch.manual_seed(0)
    model = fold_batchnorm(create_model(preset, depth=depth, **overrides).eval())
    info = {"config": model.cfg.as_dict(), "preprocess": PRE.as_dict(), "classes": list(CLASSES), "sha256": ""}
    return model, info, export_onnx(model, tmp_path / f"{preset}.onnx", info)


def _run(path_or_proto, x: np.ndarray, settings=None) -> np.ndarray:
    model = path_or_proto.SerializeToString() if isinstance(path_or_proto, onnx.ModelProto) else path_or_proto
    return open_session(model, 1, settings).run(None, {"input": x})[0]


@pytest.mark.parametrize("preset,overrides", [("hybrid-micro-48", {"distilled": True}), ("vit-micro-48", {}),
                                              ("hybrid-micro-48", {"distilled": True, "pool": "seq"})])
def test_attention_fusion_is_exact_and_keeps_units(tmp_path, preset, overrides):
    from vitedge.quantize.onnx import node_units

    model, info, path = _export(tmp_path, preset, **overrides)
    proto = onnx.load(str(path))
    before = len(proto.graph.node)
    assert fuse_attention(proto, model.cfg.num_heads, model.cfg.embed_dim) == 2
    kinds = Counter(n.op_type for n in proto.graph.node)
    # what is left of softmax: sequence pooling's, over the tokens, outside the blocks
    assert kinds["Attention"] == 2 and kinds["Softmax"] == int(model.cfg.pool == "seq")
    assert kinds["Slice"] == int(model.cfg.pool == "seq")  # sequence pooling's patch tokens, after the prefix
    assert len(proto.graph.node) < before - 30  # ~25 nodes a block became one
    onnx.checker.check_model(proto)
    x = np.random.default_rng(0).standard_normal((3, 1, 48, 48)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(proto, x), ref, atol=1e-4)
    units = node_units(proto, depth=2)
    assert [units[n.name] for n in proto.graph.node if n.op_type == "Attention"] == ["blocks.0.attn", "blocks.1.attn"]
    assert set(units.values()) == set(model_units(model))
    # nothing to fuse: a second pass, or another width, leaves the graph alone
    assert fuse_attention(proto, model.cfg.num_heads, model.cfg.embed_dim) == 0
    assert fuse_attention(onnx.load(str(path)), model.cfg.num_heads, model.cfg.embed_dim + 1) == 0


def test_optimizer_record_and_session_settings(tmp_path):
    model, info, path = _export(tmp_path, "hybrid-micro-48", distilled=True)
    record = optimize_onnx(path, info["config"], mode="on")
    assert record["applied"] and record["fused"]["Attention"] == 2 and record["fused"].get("BiasGelu") == 2
    assert "SkipLayerNormalization" not in record["fused"]  # its CPU kernel is the slow one at these widths
    assert record["ort_session"] == NO_SKIP_LAYERNORM
    x = np.random.default_rng(1).standard_normal((2, 1, 48, 48)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(path, x, NO_SKIP_LAYERNORM), ref, atol=1e-4)
    np.testing.assert_allclose(_run(path, x, {"allow_spinning": False}), ref, atol=1e-4)
    # the runtime applies what an artefact records
    from vitedge.artefact import write_meta

    meta = write_meta(tmp_path, "onnx", "fp32", path.name, info, 0.0, ort_session=NO_SKIP_LAYERNORM)
    rt = runtimes.load(tmp_path, runtime="onnx", threads=1)
    assert rt.info()["session"] == NO_SKIP_LAYERNORM and meta["ort_session"] == NO_SKIP_LAYERNORM
    np.testing.assert_allclose(rt.predict(x), ref, atol=1e-4)


def test_mixed_int8_variant_through_the_gate(tmp_path):
    """Static QDQ for the conv stem, dynamic for the matmuls and the fused Attention: one ONNX file that
    ORT runs with QLinearConv, QAttention and DynamicQuantizeMatMul kernels."""
    from vitedge.export.common import load_source
    from vitedge.quantize import QuantizeConfig, quantize
    from vitedge.quantize.core import calibration_images
    from vitedge.quantize.onnx import OnnxBackend

    torch.manual_seed(0)
    model = create_model("hybrid-micro-48", depth=1, distilled=True).eval()
    checkpoints.save_model(tmp_path / "m.pt", model, PRE, list(CLASSES))
    splits = make_synthetic(per_class=12, seed=0)
    cfg = QuantizeConfig(max_drop=100.0, calibration=16, variants=["mixed-minmax+fused", "dynamic"],
                         bench_seconds=0.05, bench_batch=4, max_fallback_steps=0)
    meta = quantize(tmp_path / "m.pt", "m", "onnx", None, tmp_path / "art", cfg, splits=splits)
    q = meta["quantization"]
    assert {v["variant"] for v in q["variants"]} == {"mixed-minmax+fused", "dynamic"}
    assert all(v["passed"] and v["timing"]["bs1_ms"] > 0 for v in q["variants"])
    assert q["final_check"]["runtime"] == "onnx"
    if q["variant"].startswith("mixed"):
        assert q["method"]["kind"] == "static QDQ Conv + dynamic MatMul/Gemm/Attention"
    assert meta.get("ort_session") in (None, NO_SKIP_LAYERNORM)  # the faster session setting, when it mattered
    # what the file holds
    src, info = load_source(tmp_path / "m.pt")
    backend = OnnxBackend(src, info, cfg, calibration_images(splits["train"], PRE, 16), tmp_path)
    path = backend.quantize("mixed-minmax+fused", (), tmp_path / "mixed.onnx")
    kinds = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert kinds["Attention"] == 0 and kinds["QAttention"] == 1  # the fused attention, dynamically quantised
    assert kinds["DequantizeLinear"] >= 4 and kinds["DynamicQuantizeLinear"] >= 1  # QDQ convs + dynamic matmuls
    assert kinds["Conv"] == 4  # 3 between Q/DQ pairs (ORT runs them as QLinearConv), the first one float
    proto = onnx.load(str(path))
    first, *rest = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert first.input[0] == "input" and not first.input[1].endswith("_DequantizeLinear_Output")
    assert all(n.input[1].endswith("_DequantizeLinear_Output") for n in rest)
    # a unit kept in float stays float in both passes
    kept = backend.quantize("mixed-minmax+fused", ("patch_embed", "blocks.0.attn"), tmp_path / "kept.onnx")
    kinds = Counter(n.op_type for n in onnx.load(str(kept)).graph.node)
    assert kinds["Attention"] == 1 and kinds["QAttention"] == 0 and kinds["DequantizeLinear"] == 0


def test_optimized_graph_cache(tmp_path):
    """The first load saves ORT's optimised graph, the next one uses it: same outputs, nothing half-written."""
    from vitedge.artefact import write_meta

    model, info, path = _export(tmp_path, "hybrid-micro-48", depth=1, distilled=True)
    write_meta(tmp_path, "onnx", "fp32", path.name, info, 0.0, ort_session=NO_SKIP_LAYERNORM)
    x = np.random.default_rng(2).standard_normal((2, 1, 48, 48)).astype(np.float32)
    first = runtimes.load(tmp_path, runtime="onnx", threads=1, optimized_cache=str(tmp_path / "cache"))
    second = runtimes.load(tmp_path, runtime="onnx", threads=1, optimized_cache=str(tmp_path / "cache"))
    assert first.info()["optimized_cache"]["state"] == "written" and second.info()["optimized_cache"]["state"] == "used"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [Path(second.info()["optimized_cache"]["path"]).name]
    np.testing.assert_allclose(second.predict(x), first.predict(x), atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(second.predict(x), model(torch.from_numpy(x)).numpy(), atol=1e-4)


def test_compression_benchmark_speed_table(tmp_path):
    """vitedge.benchmarks.compression: every artefact of a run against fp32 of its runtime and torch eager fp32."""
    import json

    from vitedge.benchmarks import compression
    from vitedge.data import save_splits
    from vitedge.quantize import QuantizeConfig, quantize
    from vitedge.verify import export_verified

    run = tmp_path / "run"
    torch.manual_seed(0)
    model = create_model("hybrid-micro-48", depth=1, distilled=True).eval()
    checkpoints.save_model(run / "models" / "student.pt", model, PRE, list(CLASSES))
    splits = make_synthetic(per_class=12, seed=0)
    save_splits(run / "data", splits, {"kind": "synthetic"})
    export_verified(run / "models" / "student.pt", run / "artefacts", "student", "onnx", "fp32", optimize="off")
    quantize(run / "models" / "student.pt", "student", "onnx", None, run / "artefacts",
             QuantizeConfig(max_drop=100.0, calibration=8, variants=["dynamic"], bench_seconds=0.05, bench_batch=4),
             splits=splits)
    assert compression.main(["--run", str(run), "--split", "none", "--threads", "1", "2", "--batch", "4",
                             "--bench-seconds", "0.05", "--json", str(tmp_path / "speed.json"),
                             "--md", str(tmp_path / "c.md")]) == 0
    rows = json.loads((tmp_path / "speed.json").read_text())["rows"]
    got = {(r["format"], r["precision"], r["threads"]): r for r in rows}
    threads = sorted({r["threads"] for r in rows})
    for t in threads:
        eager, fp32, int8 = got[("checkpoint", "fp32", t)], got[("onnx", "fp32", t)], got[("onnx", "int8", t)]
        assert eager["x_eager_bs1"] == pytest.approx(1.0) and fp32["x_fp32_bs1"] == pytest.approx(1.0)
        assert int8["x_fp32_bs1"] == pytest.approx(fp32["bs1_ms"] / int8["bs1_ms"])
        assert int8["x_eager_batch"] == pytest.approx(int8["images_per_s"] / eager["images_per_s"])
    md = (tmp_path / "c.md").read_text()
    assert "What a user gains" in md and "| student | onnxruntime | int8 |" in md
