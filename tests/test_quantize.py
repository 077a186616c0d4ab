"""int8 quantisation: the accuracy gate, the greedy fallback, the failure message, each backend.

One small ViT is trained once per module on three visually distinct synthetic classes, with
16-pixel patches (a 9-token ViT learns in ~80 steps; 6-pixel patches need thousands): its
predictions are good enough that quantisation error shows up as lost top-1, which is what the
gate measures. The graph is still a full ViT (attention, LayerNorm, GELU, two heads).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vitedge import runtimes
from vitedge.data import CLASSES, Split, make_synthetic, save_splits
from vitedge.model import create_model
from vitedge.preprocess import Preprocess
from vitedge.quantize import QuantizationError, QuantizeConfig, quantize
from vitedge.quantize.core import calibration_images, model_units
from vitedge.sysinfo import machine_info

PRE = Preprocess()


# train and time on one thread (conftest.one_thread says why)
pytestmark = pytest.mark.usefixtures("one_thread")
SUBSET = ("happy", "sad", "surprise")


def _subset(split: Split) -> Split:
    keep = [CLASSES.index(c) for c in SUBSET]
    idx = np.flatnonzero(np.isin(split.labels, keep))
    return Split(split.images[idx], np.searchsorted(keep, split.labels[idx]))


@pytest.fixture(scope="module")
def splits():
    return {k: _subset(v) for k, v in make_synthetic(per_class=150, seed=0, val_per_class=80).items()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, splits):
    """A 2-block vit-micro with 16-pixel patches, ~80 steps: well above chance on the three classes."""

    from vitedge.engine import TrainConfig, fit

    torch.manual_seed(0)
    model = create_model("vit-micro-48", depth=2, patch_size=16, num_classes=len(SUBSET))
    cfg = TrainConfig(epochs=6, batch_size=32, lr=8e-3, warmup_epochs=0.3, augment="none", class_balance="none")
    result = fit(model, splits["train"], splits["val"], PRE, cfg, tmp_path_factory.mktemp("train"), classes=SUBSET)
    assert result["best"]["val_top1"] > 0.45, "the fixture model did not learn; the gate tests would be vacuous"
    return result["best_path"]


def _run(trained, splits, tmp_path, fmt="onnx", **cfg):
    cfg = {"optimize": "off", "bench_seconds": 0.2, **cfg}  # fusion variants double the ONNX work: not needed here
    return quantize(trained, "m", fmt, None, tmp_path, QuantizeConfig(**cfg), splits=splits)


# --------------------------------------------------------------------------- pieces, no training
def test_onnx_units_follow_the_layernorms(tmp_path):
    import onnx

    from vitedge.export.onnx import export_onnx
    from vitedge.quantize.onnx import GEMM_OPS, node_units

    model = create_model("vit-micro-48", depth=2, distilled=True)
    info = {"config": model.cfg.as_dict(), "preprocess": PRE.as_dict(), "classes": list(CLASSES), "sha256": ""}
    proto = onnx.load(export_onnx(model, tmp_path / "m.onnx", info))
    units = node_units(proto, depth=2)
    gemm_units = [units[n.name] for n in proto.graph.node if n.op_type in GEMM_OPS]
    # conv; per block: qkv, q@k, attn@v, proj | fc1, fc2; head and head_dist
    assert gemm_units == ["patch_embed", *["blocks.0.attn"] * 4, *["blocks.0.mlp"] * 2,
                          *["blocks.1.attn"] * 4, *["blocks.1.mlp"] * 2, "head", "head"]
    assert set(units.values()) == set(model_units(model))


def test_conv_stem_is_one_fallback_unit(tmp_path):
    """The hybrid's stem (three convs, BN folded, and its 1x1 projection) is the `patch_embed` unit."""
    import onnx

    from vitedge.export.onnx import export_onnx
    from vitedge.model import fold_batchnorm
    from vitedge.quantize.onnx import GEMM_OPS, node_units

    model = fold_batchnorm(create_model("hybrid-micro-48", depth=2, distilled=True).eval())
    info = {"config": model.cfg.as_dict(), "preprocess": PRE.as_dict(), "classes": list(CLASSES), "sha256": ""}
    proto = onnx.load(export_onnx(model, tmp_path / "m.onnx", info))
    units = node_units(proto, depth=2)
    conv_units = [units[n.name] for n in proto.graph.node if n.op_type == "Conv"]
    assert conv_units == ["patch_embed"] * 4  # 3x3 convs and the 1x1 projection
    gemm_units = [units[n.name] for n in proto.graph.node if n.op_type in GEMM_OPS]
    assert gemm_units[:4] == ["patch_embed"] * 4 and gemm_units[-1] == "head"
    assert set(units.values()) == set(model_units(model))


def test_calibration_images_are_stratified_and_preprocessed():
    sp = make_synthetic(per_class=20, seed=0)["train"]
    x = calibration_images(sp, PRE, 35)
    assert x.shape == (35, 1, 48, 48) and x.dtype == np.float32
    assert np.array_equal(x, calibration_images(sp, PRE, 35))  # deterministic
    with pytest.raises(ValueError):
        QuantizeConfig(calibrate_method="mse")


# --------------------------------------------------------------------------- the gate
def test_onnx_int8_passes_the_gate(trained, splits, tmp_path):
    meta = _run(trained, splits, tmp_path, variants=["dynamic", "static-percentile"], max_drop=1.0)
    q = meta["quantization"]
    assert meta["format"] == "onnx" and meta["precision"] == "int8"
    assert (tmp_path / "m" / "onnx-int8" / "model.onnx").is_file()
    assert q["drop_points"] <= 1.0 and q["final_check"]["drop_points"] <= 1.0
    assert q["final_check"]["runtime"] == "onnx"
    assert {v["variant"] for v in q["variants"]} == {"dynamic", "static-percentile"}
    lat = q["latency"]  # the speed-up is the two measured latencies' ratio, and "faster" says whether it is > 1
    assert lat["int8"]["bs1_ms"] > 0 and lat["fp32"]["bs1_ms"] > 0
    assert lat["speedup_bs1"] == pytest.approx(lat["fp32"]["bs1_ms"] / lat["int8"]["bs1_ms"], rel=1e-2)
    assert lat["faster_than_fp32"] is (lat["speedup_bs1"] > 1.0)
    assert q["calibration"]["images"] == 256 and "cpu_features" in q
    # timed at batch 1 on 1..every core; runtimes on this CPU use the fastest for batch-1 calls
    bs1 = meta["bs1_threads"]
    assert bs1["runtime"] == "onnx" and bs1["cpu"] == machine_info()["cpu"]["model"]
    assert "1" in bs1["bs1_ms"] and str(bs1["best"]) in bs1["bs1_ms"]
    assert bs1["bs1_ms"][str(bs1["best"])] <= min(bs1["bs1_ms"].values()) * (1 + runtimes.BS1_TIE) + 1e-9


def test_dynamic_int8_answers_each_face_as_if_alone(trained, splits, tmp_path):
    """ORT's dynamic int8 quantises activations with one scale per call: batched, a face's logits would
    depend on its neighbours. The runtime runs such artefacts one face per call, so they do not."""
    _run(trained, splits, tmp_path, variants=["dynamic"], max_drop=100.0)
    rt = runtimes.load(tmp_path / "m" / "onnx-int8")
    assert rt.per_face and rt.info()["one_face_per_call"]
    x = rt.preprocess(splits["test"].images[:6])
    x[0] *= 40.0  # an outlier face widens a per-call range: the others' logits would move with it
    alone = np.concatenate([rt.predict(x[i:i + 1]) for i in range(len(x))])
    assert np.array_equal(rt.predict(x), alone)
    batched = rt.session.run(None, {rt.input_name: x})[0]  # what one call on the batch gives
    assert not np.allclose(batched[1:], alone[1:], atol=1e-6)  # so the test can fail
    from vitedge.runtimes.onnx_rt import dynamic_activations
    assert not dynamic_activations({"quantization": {"method": {"kind": "static"}}}) and not dynamic_activations({})


def test_fallback_keeps_the_most_sensitive_units_in_float(trained, splits, tmp_path):
    # every op quantised from the ranges of ONE image: certain to fail a zero-drop budget at first
    meta = _run(trained, splits, tmp_path, variants=["static-all-minmax"], calibration=1, max_drop=0.0,
                max_fallback_steps=6)
    q = meta["quantization"]
    first, last = q["attempts"][0], q["attempts"][-1]
    assert not first["passed"] and first["drop"] > 0
    assert last["passed"] and q["drop_points"] <= 0.0
    assert q["kept_float"] and q["kept_float"] == last["excluded"]
    ranking = list(q["sensitivity"])
    assert sorted(ranking) == sorted(model_units(create_model("vit-micro-48", depth=2)))
    assert q["kept_float"] == ranking[:len(q["kept_float"])]  # greedy: most sensitive first


def test_agreement_with_fp32_is_gated_as_well_as_accuracy(trained, splits, tmp_path):
    """With an accuracy budget no variant can miss, `min_agreement` alone sends the one-image-calibrated
    model through the fallback: units go back to float until int8 names fp32's class on every face."""
    meta = _run(trained, splits, tmp_path, variants=["static-all-minmax"], calibration=1, max_drop=100.0,
                min_agreement=1.0, max_fallback_steps=6)
    q = meta["quantization"]
    first, last = q["attempts"][0], q["attempts"][-1]
    assert not first["passed"] and first["drop"] <= 100.0 and first["parity"]["top1_agreement"] < 1.0
    assert last["passed"] and last["parity"]["top1_agreement"] == 1.0 and q["kept_float"]
    assert q["gate"]["min_agreement"] == 1.0 and q["final_check"]["agreement"] == 1.0
    with pytest.raises(ValueError, match="fraction"):
        QuantizeConfig(min_agreement=99.0)


def test_no_mix_within_budget_fails_with_the_shortfall(trained, splits, tmp_path):
    with pytest.raises(QuantizationError, match=r"misses by \d+\.\d\d points") as err:
        _run(trained, splits, tmp_path, variants=["static-all-minmax"], calibration=1, max_drop=0.0,
             max_fallback_steps=0)
    assert err.value.shortfall > 0
    assert not (tmp_path / "m" / "onnx-int8" / "meta.json").exists()


def test_cli(trained, splits, tmp_path, capsys):
    from vitedge.quantize.__main__ import main

    # the on-disk format wants every FER class in train: pad it with one image per unused class
    # (train only feeds calibration); val/test keep the model's three
    pad = np.arange(len(SUBSET), len(CLASSES))
    train = Split(np.concatenate([splits["train"].images, splits["train"].images[:len(pad)]]),
                  np.concatenate([splits["train"].labels, pad]))
    data = tmp_path / "data"
    save_splits(data, {**splits, "train": train}, {"kind": "synthetic"})
    args = ["--checkpoint", str(trained), "--model-name", "m", "--format", "onnx", "--data", str(data),
            "--out", str(tmp_path / "art"), "--config-json", json.dumps({"optimize": "off", "bench_seconds": 0.2})]
    assert main([*args, "--variants", "dynamic"]) == 0
    assert "onnx-int8 [dynamic]" in capsys.readouterr().out
    assert main([*args, "--variants", "static-all-minmax", "--calibration", "1", "--max-drop", "0",
                 "--config-json", json.dumps({"max_fallback_steps": 0, "optimize": "off"})]) == 4
    assert "misses by" in capsys.readouterr().err


def test_tensorrt_qdq_is_symmetric_with_float_biases(trained, splits, tmp_path):
    import onnx
    from onnx import numpy_helper

    meta = _run(trained, splits, tmp_path, "tensorrt", max_drop=2.0)
    proto = onnx.load(tmp_path / "m" / "tensorrt-int8" / "model.onnx")
    zero_points = [numpy_helper.to_array(i) for i in proto.graph.initializer if i.name.endswith("zero_point")]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    producer = {o: n.op_type for n in proto.graph.node for o in n.output}
    quantised_from = {producer.get(n.input[0], "graph input") for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    assert "MatMul" not in quantised_from and "Gemm" not in quantised_from  # Q/DQ on GEMM inputs, not outputs
    assert not [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and "bias" in n.input[0]]
    assert meta["format"] == "tensorrt" and meta["onnx"] == "model.onnx"
    assert "engine" in meta or "engine_key" in meta  # skipped with a reason here, built on a GPU host


# --------------------------------------------------------------------------- the other backends
@pytest.mark.slow
def test_torch_pt2e_int8(trained, splits, tmp_path):

    meta = _run(trained, splits, tmp_path, "torch", max_drop=2.0, method="static", compile=False)
    q = meta["quantization"]
    assert meta["file"] == "model.pt2" and q["drop_points"] <= 2.0 and "torch.compile" in meta["run"]
    program = torch.export.load(str(tmp_path / "m" / "torch-int8" / "model.pt2"))
    ops = {str(n.target) for n in program.graph.nodes}
    assert any("quantize_per" in o for o in ops)  # a real Q/DQ graph, not a float copy


@pytest.mark.slow
def test_executorch_xnnpack_int8(trained, splits, tmp_path):
    meta = _run(trained, splits, tmp_path, "executorch", max_drop=2.0, method="dynamic")
    q = meta["quantization"]
    assert meta["file"] == "model.pte" and q["final_check"]["runtime"] == "executorch"
    assert q["final_check"]["drop_points"] <= 2.0


@pytest.mark.slow
def test_coreml_int8_weights_gated_by_reading_them_back(trained, splits, tmp_path):
    meta = _run(trained, splits, tmp_path, "coreml", max_drop=2.0)
    q = meta["quantization"]
    assert meta["file"] == "model.mlpackage" and q["drop_points"] <= 2.0
    assert q["final_check"]["export_checks"]["coreml_weights"]["checked"] > 0
    assert "macOS" in q["method"]["activations"]


# --------------------------------------------------------------------------- the hybrid (conv stem)
@pytest.fixture(scope="module")
def trained_hybrid(tmp_path_factory, splits):
    """A 2-block conv-stem ViT trained like `trained`: its BatchNorm is folded before quantisation."""

    from vitedge.engine import TrainConfig, fit

    torch.manual_seed(0)
    model = create_model("hybrid-micro-48", depth=2, num_classes=len(SUBSET))
    cfg = TrainConfig(epochs=6, batch_size=32, lr=0.016, warmup_epochs=0.5, augment="none", class_balance="none")
    result = fit(model, splits["train"], splits["val"], PRE, cfg, tmp_path_factory.mktemp("train-h"), classes=SUBSET)
    assert result["best"]["val_top1"] > 0.45, "the hybrid fixture did not learn; the gate tests would be vacuous"
    return result["best_path"]


def test_hybrid_onnx_int8_passes_the_gate(trained_hybrid, splits, tmp_path):
    meta = _run(trained_hybrid, splits, tmp_path, "onnx", variants=["dynamic", "static-percentile"], max_drop=2.0)
    q = meta["quantization"]
    assert q["drop_points"] <= 2.0 and q["final_check"]["drop_points"] <= 2.0 and meta["config"]["stem"] == "conv"


def test_hybrid_conv_stem_is_a_unit_of_the_sensitivity_search(trained_hybrid, splits, tmp_path):
    """The fallback ranks the stem (its convs and 1x1 projection) like any block: it can stay float."""
    from vitedge.batching import map_batches
    from vitedge.export.common import load_source
    from vitedge.quantize.core import Gate, calibration_images, sensitivity, torch_predict
    from vitedge.quantize.onnx import OnnxBackend

    model, info = load_source(trained_hybrid)
    x_val = PRE(splits["val"].images)
    gate = Gate(map_batches(torch_predict(model), x_val, 128), x_val, splits["val"].labels, 0.0)
    backend = OnnxBackend(model, info, QuantizeConfig(optimize="off"), calibration_images(splits["train"], PRE, 8),
                          tmp_path)
    ranking = sensitivity(backend, "static-all-minmax", gate, 64)
    assert set(ranking) == set(model_units(model)) and "patch_embed" in ranking
    assert all(v >= 0 for v in ranking.values())


def test_hybrid_tensorrt_qdq_quantises_the_stem_convs(trained_hybrid, splits, tmp_path):
    import onnx

    _run(trained_hybrid, splits, tmp_path, "tensorrt", max_drop=2.0)
    proto = onnx.load(tmp_path / "m" / "tensorrt-int8" / "model.onnx")
    producer = {o: n.op_type for n in proto.graph.node for o in n.output}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert len(convs) == 4 and "BatchNormalization" not in {n.op_type for n in proto.graph.node}
    assert all(producer.get(c.input[0]) == "DequantizeLinear" for c in convs[1:])  # int8 inputs into the convs
