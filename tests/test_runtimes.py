"""One runtime interface: loading by path, input checks, auto selection, and the two error types."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vitedge import artefact, hosts, runtimes
from vitedge.checkpoints import save_model
from vitedge.data import CLASSES
from vitedge.export import common
from vitedge.model import create_model
from vitedge.preprocess import Preprocess
from vitedge.sysinfo import machine_info
from vitedge.verify import export_verified

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("rt") / "student.pt"
    save_model(path, create_model("vit-micro-48", depth=1, distilled=True), Preprocess(), list(CLASSES))
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory, ckpt):
    root = tmp_path_factory.mktemp("art")
    export_verified(ckpt, root, "student", "onnx", "fp32", optimize="off")
    return root


def _x(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 1, 48, 48)).astype(np.float32)


def test_torch_runtime_from_checkpoint(ckpt):
    rt = runtimes.load(ckpt)
    assert rt.name == "torch" and rt.classes == list(CLASSES) and rt.preprocess == Preprocess()
    out = rt.predict(_x())
    assert out.shape == (3, 7) and out.dtype == np.float32
    info = rt.info()
    assert {"runtime", "version", "device", "precision", "threads"} <= set(info) and info["precision"] == "fp32"


def test_onnx_runtime_matches_torch_and_accepts_any_path_form(root, ckpt):
    art = root / "student" / "onnx-fp32"
    ref = runtimes.load(ckpt).predict(_x(5))
    for path in (art, art / "model.onnx", art / "meta.json", root / "student"):
        rt = runtimes.load(path, threads=1)
        assert rt.name == "onnx" and rt.info()["threads"] == 1
        assert np.abs(rt.predict(_x(5)) - ref).max() < 1e-4


def test_predict_checks_input(ckpt):
    rt = runtimes.load(ckpt)
    with pytest.raises(TypeError, match="float32"):
        rt.predict(_x().astype(np.float64))
    with pytest.raises(ValueError, match=r"shape \(N>=1, 1, 48, 48\)"):
        rt.predict(np.zeros((2, 3, 48, 48), np.float32))
    with pytest.raises(ValueError, match="shape"):
        rt.predict(np.zeros((1, 48, 48), np.float32))
    with pytest.raises(TypeError, match="numpy"):
        rt.predict([[0.0]])
    assert rt.predict(torch.from_numpy(_x(2))).shape == (2, 7)  # tensors are accepted too


def test_backend_options(ckpt, root):
    ref = runtimes.load(ckpt).predict(_x(2))
    half = runtimes.load(ckpt, dtype="bf16")
    assert half.info()["dtype"] == "bfloat16" and np.abs(half.predict(_x(2)) - ref).max() < 0.1
    with pytest.raises(ValueError, match="dtype"):
        runtimes.load(ckpt, dtype="int3")
    with pytest.raises(runtimes.RuntimeUnavailable, match="option.*dtype"):
        runtimes.load(root / "student" / "onnx-fp32", dtype="fp16")


def test_wrong_kind_missing_meta_and_unknown_runtime(root, ckpt, tmp_path):
    art = root / "student" / "onnx-fp32"
    with pytest.raises(runtimes.ArtefactError, match="onnx artefact.*executorch runtime"):
        runtimes.load(art, runtime="executorch")
    with pytest.raises(runtimes.ArtefactError, match="checkpoint artefact.*onnx runtime"):
        runtimes.load(ckpt, runtime="onnx")
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copyfile(art / "model.onnx", bare / "model.onnx")
    with pytest.raises(runtimes.ArtefactError, match="meta.json is missing"):
        runtimes.load(bare / "model.onnx")
    with pytest.raises(runtimes.ArtefactError, match="not found"):
        runtimes.load(tmp_path / "nothing")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(runtimes.ArtefactError, match="cannot read checkpoint"):
        runtimes.load(junk)
    with pytest.raises(ValueError, match="unknown runtime"):
        runtimes.load(art, runtime="mxnet")


def _fake_artefact(root: Path, ckpt: Path, fmt: str, file_name: str, **extra) -> Path:
    art = artefact.artefact_dir(root, "student", fmt, "fp16")
    art.mkdir(parents=True, exist_ok=True)
    target = art / file_name
    target.mkdir() if file_name.endswith(".mlpackage") else target.write_bytes(b"\0" * 16)
    _, info = common.load_source(ckpt)
    artefact.write_meta(art, fmt, "fp16", file_name, info, 0.0, **extra)
    return art


def test_unavailable_runtimes_say_what_is_missing(tmp_path, ckpt):
    trt_art = _fake_artefact(tmp_path, ckpt, "tensorrt", "model-x-sm90-trt10.13.engine", engine_key={"key": "x"})
    try:
        import tensorrt  # noqa: F401
        has_trt = hasattr(tensorrt, "Builder")
    except ImportError:
        has_trt = False
    if not has_trt:
        with pytest.raises(runtimes.RuntimeUnavailable, match="pip install tensorrt .*NVIDIA"):
            runtimes.load(trt_art)
        with pytest.raises(runtimes.RuntimeUnavailable):
            runtimes.load(trt_art, runtime="tensorrt")  # alias
    cm_art = _fake_artefact(tmp_path, ckpt, "coreml", "model.mlpackage")
    if not hosts.is_macos():
        with pytest.raises(runtimes.RuntimeUnavailable, match="macOS") as exc:
            runtimes.load(cm_art)
        assert exc.value.runtime == "coreml" and "runtimes/ios" in exc.value.how
    avail = runtimes.available()
    assert avail["torch"] is None and avail["onnx"] is None
    assert set(avail) == set(runtimes.runtimes())


def test_auto_prefers_the_fastest_artefact_that_runs_here(tmp_path, root, ckpt):
    folder = tmp_path / "models"
    shutil.copytree(root / "student", folder / "student")
    _fake_artefact(folder, ckpt, "tensorrt", "model-x.engine", engine_key={"key": "x"})  # no TensorRT here
    _fake_artefact(folder, ckpt, "coreml", "model.mlpackage")  # no Core ML off macOS
    cls, art, meta = runtimes.resolve(folder / "student")
    assert cls.name == "onnx" and meta["format"] == "onnx" and art.name == "onnx-fp32"
    assert runtimes.load(folder / "student", device="auto").device == "cpu"  # auto falls back to the CPU


class EchoRuntime(runtimes.Runtime):
    """A backend of one class: logits that count the batch it was given."""

    name, priority = "echo", 1

    def _predict(self, x):
        return np.zeros((len(x), len(self.classes)), np.float32) + len(x)


def test_a_new_format_names_its_backend_in_the_table(tmp_path, ckpt, monkeypatch):
    """The backend is one class; the format table says which format it runs (tests/test_formats.py
    adds a whole format the same way)."""
    spec = artefact.FormatSpec("echo", "model.echo", f"{__name__}:EchoRuntime")
    monkeypatch.setitem(artefact.FORMAT_TABLE, "echo", spec)
    art = tmp_path / "student" / "echo-fp32"
    art.mkdir(parents=True)
    (art / "model.echo").write_bytes(b"")
    _, info = common.load_source(ckpt)
    meta = artefact.write_meta(art, "echo", "fp32", "model.echo", info, 0.0, max_batch=2)
    rt = runtimes.load(art)
    assert isinstance(rt, EchoRuntime) and "echo" in runtimes.runtimes()
    assert EchoRuntime.served_formats() == ("echo",)
    # batches larger than the artefact's max are split: 2 + 2 + 1
    assert rt.predict(_x(5))[:, 0].tolist() == [2, 2, 2, 2, 1]
    assert meta["input"]["max_batch"] == 2
    with pytest.raises(artefact.ArtefactError, match=r"onnx runtime cannot run \(it runs onnx, ort\)"):
        runtimes.load(art, runtime="onnx")


def test_a_format_the_table_does_not_hold_has_no_runtime(tmp_path, ckpt):
    art = tmp_path / "student" / "nope-fp32"
    art.mkdir(parents=True)
    (art / "model.nope").write_bytes(b"")
    _, info = common.load_source(ckpt)
    artefact.write_meta(art, "nope", "fp32", "model.nope", info, 0.0)
    with pytest.raises(artefact.ArtefactError, match="no runtime runs nope artefacts"):
        runtimes.load(art)


def test_torch_export_program_artefact(tmp_path, ckpt):
    """The quantiser may ship a torch.export program (.pt2) as format "torch"."""
    model, info = common.load_source(ckpt)
    art = artefact.artefact_dir(tmp_path, "student", "torch", "fp32")
    art.mkdir(parents=True)
    torch.export.save(common.export_program(model, max_batch=8), str(art / "model.pt2"))
    artefact.write_meta(art, "torch", "fp32", "model.pt2", info, 0.0)
    rt = runtimes.load(art)
    assert rt.name == "torch"
    with torch.no_grad():
        ref = model(torch.from_numpy(_x(4))).numpy()
    assert np.abs(rt.predict(_x(4)) - ref).max() < 1e-5


def test_executorch_pads_a_fixed_batch(tmp_path, ckpt, monkeypatch):
    """A fixed-batch .pte gets full batches: the runtime pads the last piece and trims the result."""
    from vitedge.runtimes import executorch_rt

    seen = []

    class FakeMethod:
        def execute(self, inputs):
            seen.append(tuple(inputs[0].shape))
            return [torch.ones(inputs[0].shape[0], 7)]

    rt = object.__new__(executorch_rt.ExecuTorchRuntime)
    rt.method, rt.static_batch, rt.max_batch, rt.input_shape = FakeMethod(), 4, 4, (1, 48, 48)
    rt.name, rt.classes, rt.path = "executorch", list(CLASSES), tmp_path
    assert rt.predict(_x(6)).shape == (6, 7)
    assert seen == [(4, 1, 48, 48), (4, 1, 48, 48)]


def _with_bs1_record(root: Path, tmp_path: Path, best: int, cpu: str) -> Path:
    art = tmp_path / "student" / "onnx-fp32"
    shutil.copytree(root / "student" / "onnx-fp32", art)
    artefact.update_meta(art, bs1_threads={"best": best, "bs1_ms": {"1": 0.5, "2": 0.7}, "cpu": cpu,
                                           "runtime": "onnx"})
    return art


def test_batch1_calls_use_the_thread_count_measured_fastest_on_this_cpu(root, tmp_path):
    here = machine_info()["cpu"]["model"]
    art = _with_bs1_record(root, tmp_path, best=1, cpu=here)
    rt = runtimes.load(art, threads=2)
    assert rt.threads == 2 and rt.bs1_threads == 1 and rt.info()["bs1_threads"] == 1
    assert rt.session.get_session_options().intra_op_num_threads == 2
    assert rt.bs1_session.get_session_options().intra_op_num_threads == 1
    x = _x(4)
    batch = rt.predict(x)
    singles = np.concatenate([rt.predict(x[i:i + 1]) for i in range(4)])
    assert np.abs(batch - singles).max() < 1e-5
    one = runtimes.load(art, threads=1)  # never above the caller's budget ...
    assert one.bs1_threads == 1 and one.bs1_session is one.session
    # ... and only for the CPU model it was measured on
    assert runtimes.base.bs1_threads({"bs1_threads": {"best": 4, "cpu": here}}, 2) == 2
    assert runtimes.base.bs1_threads({"bs1_threads": {"best": 1, "cpu": "another CPU"}}, 2) == 2
    assert runtimes.base.bs1_threads({}, 2) == 2
    other = _with_bs1_record(root, tmp_path / "o", best=1, cpu="another CPU")
    rt = runtimes.load(other, threads=2)
    assert rt.bs1_threads == 2 and rt.bs1_session is rt.session


def test_measure_bs1_threads_times_each_pool_and_prefers_fewer_threads(root, ckpt, monkeypatch):
    monkeypatch.setattr(runtimes, "available_cores", lambda: 3)
    rec = runtimes.measure_bs1_threads(root / "student" / "onnx-fp32", seconds=0.02)
    assert set(rec["bs1_ms"]) == {"1", "2", "3"} and rec["runtime"] == "onnx"
    fastest = min(rec["bs1_ms"].values())
    within = [int(t) for t, v in rec["bs1_ms"].items() if v <= fastest * (1 + runtimes.BS1_TIE)]
    assert rec["best"] == min(within)
    assert runtimes.measure_bs1_threads(ckpt) is None  # torch's pool is process-wide: nothing to choose
