"""LiteRT (.tflite): the export matches PyTorch, int8 goes through the accuracy gate, the runtime
runs float and full-integer models behind the one interface, and a missing toolchain is a clear
error. Export/quantise tests need `vitedge[litert]` (litert-torch, ai-edge-quantizer) and skip
without it; the error tests run everywhere."""
from __future__ import annotations

import builtins
import importlib.util

import numpy as np
import pytest
import torch

from vitedge import checkpoints, runtimes
from vitedge.artefact import RuntimeUnavailable
from vitedge.data import CLASSES
from vitedge.model import create_model
from vitedge.preprocess import Preprocess
from vitedge.verify import export_verified

HAVE_CONVERTER = all(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_litert", "ai_edge_quantizer"))
needs_converter = pytest.mark.skipif(not HAVE_CONVERTER, reason="vitedge[litert] (litert-torch, ai-edge-quantizer) "
                                                                "is not installed")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A one-block hybrid (conv stem, distillation token) with BatchNorm statistics that are not the
    identity, as a vitedge checkpoint."""
    d = tmp_path_factory.mktemp("litert")
    torch.manual_seed(0)
    model = create_model("hybrid-micro-48", depth=1, distilled=True)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    checkpoints.save_model(d / "m.pt", model, Preprocess(), list(CLASSES))
    return d


def _hide(monkeypatch, *modules):
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name.split(".")[0] in modules:
            raise ImportError(f"No module named '{name}'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    real_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n.split(".")[0] in modules
                        else real_spec(n, *a))


def test_missing_runtime_and_converter_are_clear_errors(monkeypatch, tiny, tmp_path, capsys):
    from vitedge.export.__main__ import main as export_main
    from vitedge.runtimes.litert_rt import LiteRTRuntime

    _hide(monkeypatch, "ai_edge_litert", "litert_torch")
    with pytest.raises(RuntimeUnavailable, match="pip install ai-edge-litert"):
        LiteRTRuntime.check("cpu")
    assert "litert" in runtimes.available()  # listed, with the reason
    assert runtimes.available()["litert"].startswith("litert is not available")
    with pytest.raises(RuntimeUnavailable, match=r"vitedge\[litert\]"):
        export_verified(tiny / "m.pt", tmp_path, "m", "litert", "fp32")
    assert not (tmp_path / "m" / "litert-fp32").exists()  # refused before touching the disk
    assert export_main(["--checkpoint", str(tiny / "m.pt"), "--model-name", "m", "--format", "litert",
                        "--out", str(tmp_path)]) == 3
    assert "litert-torch is not installed" in capsys.readouterr().err
    with pytest.raises(ValueError, match="vitedge.quantize"):
        export_verified(tiny / "m.pt", tmp_path, "m", "litert", "int8")


def test_unit_regexes():
    from vitedge.quantize.litert import unit_regex

    names = {"patch_embed": "vitedge.model.VisionTransformer/vitedge.model.ConvStem_patch_embed/x.Conv2d_proj;2",
             "blocks.1.attn": "m/torch.nn.modules.container.Sequential_blocks/vitedge.model.Block_1/"
                              "vitedge.model.Attention_attn/torch.nn.modules.linear.Linear_qkv;",
             "blocks.1.mlp": "m/Sequential_blocks/vitedge.model.Block_1/vitedge.model.Mlp_mlp/Linear_fc1;1",
             "blocks.11.mlp": "m/Sequential_blocks/vitedge.model.Block_11/vitedge.model.Mlp_mlp/Linear_fc2",
             "head": "vitedge.model.VisionTransformer/torch.nn.modules.linear.Linear_head_dist;"}
    import re

    for unit, name in names.items():
        hits = [u for u in names if re.search(unit_regex(u), name)]
        assert hits == [unit], (unit, name, hits)
    # sequence pooling's scoring linear is part of the head unit
    assert re.search(unit_regex("head"), "vitedge.model.VisionTransformer/torch.nn.modules.linear.Linear_attn_pool;")
    with pytest.raises(ValueError):
        unit_regex("blocks.x")


@needs_converter
def test_fp32_export_matches_pytorch(tiny, tmp_path):
    meta = export_verified(tiny / "m.pt", tmp_path, "m", "litert", "fp32")
    assert meta["file"] == "model.tflite" and meta["input"]["max_batch"] == 1
    assert meta["verification"]["parity"]["max_abs_delta"] <= 1e-4
    assert meta["xnnpack_partitions"] >= 1 and "FULLY_CONNECTED" in meta["ops"]
    model, _ = checkpoints.load_model(tiny / "m.pt")
    from vitedge.model import fold_batchnorm

    fold_batchnorm(model.eval())
    rt = runtimes.load(tmp_path / "m" / "litert-fp32", threads=1)  # auto picks litert for a .tflite
    assert rt.name == "litert" and rt.info()["delegate"] == "XNNPACK" and rt.info()["io"] == "float32 in, float32 out"
    x = np.random.default_rng(0).standard_normal((7, 1, 48, 48)).astype(np.float32)  # split into 7 calls
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(rt.predict(x), ref, atol=1e-4)
    plain = runtimes.load(tmp_path / "m" / "litert-fp32", runtime="tflite", threads=1, xnnpack=False)
    np.testing.assert_allclose(plain.predict(x), ref, atol=1e-4)
    with pytest.raises(RuntimeUnavailable, match="option"):
        runtimes.load(tmp_path / "m" / "litert-fp32", runtime="litert", dtype="fp16")


@needs_converter
def test_int8_through_the_gate(tiny, tmp_path, synthetic_splits):
    from vitedge.quantize import QuantizeConfig, quantize

    cfg = QuantizeConfig(max_drop=1.0, calibration=16, method="dynamic", bench_seconds=0.05, bench_batch=4)
    meta = quantize(tiny / "m.pt", "m", "litert", None, tmp_path, cfg, splits=synthetic_splits)
    q = meta["quantization"]
    assert meta["format"] == "litert" and meta["precision"] == "int8"
    assert q["drop_points"] <= 1.0 and q["final_check"]["runtime"] == "litert"
    assert q["final_check"]["drop_points"] <= 1.0 and q["method"]["kind"] == "dynamic"
    assert q["latency"]["fp32"]["bs1_ms"] > 0 and q["latency"]["int8"]["bs1_ms"] > 0
    # the interpreter's pool: the thread count the batch-1 model was measured fastest with, within the budget
    best = meta["bs1_threads"]["best"]
    assert meta["bs1_threads"]["runtime"] == "litert" and str(best) in meta["bs1_threads"]["bs1_ms"]
    assert runtimes.load(tmp_path / "m" / "litert-int8", threads=64).info()["pool_threads"] == best
    # full integer: int8 in and out, (de)quantised by the runtime with the tensors' scales
    cfg = QuantizeConfig(max_drop=100.0, calibration=16, method="static", bench_seconds=0.05, bench_batch=4)
    meta = quantize(tiny / "m.pt", "s", "litert", None, tmp_path, cfg, splits=synthetic_splits)
    rt = runtimes.load(tmp_path / "s" / "litert-int8", threads=1)
    assert rt.info()["io"] == "int8 in, int8 out"
    x = Preprocess()(synthetic_splits["val"].images[:20])
    fp32 = runtimes.load(tiny / "m.pt", runtime="torch", threads=1).predict(x)
    out = rt.predict(x)
    assert out.dtype == np.float32 and out.shape == (20, 7)
    assert np.abs(out - fp32).max() < 0.5 * np.abs(fp32).max()  # same scale: dequantised, not raw int8
    assert meta["quantization"]["method"]["kind"] == "static"


@needs_converter
def test_fallback_keeps_a_unit_in_float(tiny, tmp_path, synthetic_splits):
    """The fallback's units reach the converted graph: a unit kept float keeps float weights, the rest int8."""
    from ai_edge_litert.interpreter import Interpreter

    from vitedge.export.common import load_source
    from vitedge.quantize import QuantizeConfig
    from vitedge.quantize.core import calibration_images
    from vitedge.quantize.litert import LiteRTBackend

    model, info = load_source(tiny / "m.pt")
    calib = calibration_images(synthetic_splits["train"], Preprocess(), 8)
    backend = LiteRTBackend(model, info, QuantizeConfig(calibration=8, method="dynamic"), calib, tmp_path)

    def weight_types(path) -> dict[str, set[str]]:
        it = Interpreter(model_path=str(path))
        it.allocate_tensors()
        out: dict[str, set[str]] = {"head": set(), "blocks": set()}
        for t in it.get_tensor_details():
            if len(t["shape"]) == 2 and min(t["shape"]) > 1:  # FC weight matrices
                key = "head" if "_head" in t["name"] else "blocks" if "Block_" in t["name"] else None
                if key:
                    out[key].add(np.dtype(t["dtype"]).name)
        return out

    all_int8 = weight_types(backend.build("dynamic", ()).payload)
    head_float = weight_types(backend.build("dynamic", ("head",)).payload)
    assert all_int8["head"] == {"int8"} and all_int8["blocks"] == {"int8"}
    assert head_float["head"] == {"float32"} and head_float["blocks"] == {"int8"}
    assert backend.nodes("dynamic", ("head",)) == [r"_(head(_dist)?|attn_pool)(/|;|$)"]
