"""Exports match PyTorch (ONNX, .ort, ExecuTorch), Core ML's spec and weights read back, the
meta.json contract holds, and TensorRT's pure parts work against a fake `tensorrt` module."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from vitedge import artefact, hosts
from vitedge.artefact import ArtefactError, RuntimeUnavailable
from vitedge.checkpoints import save_model
from vitedge.data import CLASSES
from vitedge.export import common
from vitedge.export import tensorrt as trt_export
from vitedge.model import create_model
from vitedge.preprocess import Preprocess
from vitedge.verify import export_verified

torch.set_num_threads(1)
TOL = 1e-4  # max |Δlogit| against PyTorch for fp32 formats


def _checkpoint(path: Path, distilled: bool, meta: dict | None = None, **overrides) -> Path:
    torch.manual_seed(0)
    model = create_model("vit-micro-48", distilled=distilled, **overrides)
    save_model(path, model, Preprocess(), list(CLASSES), meta or {})
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    return {True: _checkpoint(d / "distilled.pt", True), False: _checkpoint(d / "plain.pt", False)}


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """One block: for tests of plumbing rather than numerics."""
    return _checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.pt", False, depth=1)


@pytest.fixture(scope="module")
def onnx_root(tmp_path_factory, ckpts):
    """ONNX artefacts of both checkpoints, exported once for several tests."""
    root = tmp_path_factory.mktemp("art")
    for distilled, ckpt in ckpts.items():
        export_verified(ckpt, root, f"m{int(distilled)}", "onnx", "fp32", optimize="off")
    return root


def _torch_logits(ckpt: Path, x: np.ndarray) -> np.ndarray:
    model, _ = common.load_source(ckpt)
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _inputs(n: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 48, 48)).astype(np.float32)


# --------------------------------------------------------------------------- ONNX / ORT
@pytest.mark.parametrize("distilled", [False, True])
def test_onnx_matches_torch_with_dynamic_batch(onnx_root, ckpts, distilled):
    import onnx
    import onnxruntime as ort

    art = onnx_root / f"m{int(distilled)}" / "onnx-fp32"
    meta = artefact.read_meta(art)
    assert meta["verification"]["parity"]["max_abs_delta"] < TOL
    assert meta["input"] == {"name": "input", "shape": [-1, 1, 48, 48], "dtype": "float32", "max_batch": None}
    assert meta["output"]["name"] == "logits" and meta["classes"] == list(CLASSES)
    assert meta["source_sha256"] and meta["size_bytes"] == (art / "model.onnx").stat().st_size
    assert sorted(p.name for p in art.iterdir()) == ["meta.json", "model.onnx"]  # weights inside, no .onnx.data

    proto = onnx.load(str(art / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["vitedge.classes"]) == list(CLASSES)
    assert json.loads(props["vitedge.preprocess"])["img_size"] == 48
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    sess = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 7):
        x = _inputs(n)
        got = sess.run(["logits"], {"input": x})[0]
        assert np.abs(got - _torch_logits(ckpts[distilled], x)).max() < TOL


def test_ort_format_from_the_onnx_artefact(onnx_root, ckpts):
    from vitedge import runtimes

    meta = export_verified(ckpts[True], onnx_root, "m1", "ort", "fp32")
    art = onnx_root / "m1" / "ort-fp32"
    assert meta["file"] == "model.ort" and (art / "required_operators.config").is_file()
    assert meta["source_onnx"].endswith("onnx-fp32")
    assert meta["verification"]["parity"]["max_abs_delta"] < TOL
    x = _inputs(3)
    ort_out = runtimes.load(art).predict(x)
    onnx_out = runtimes.load(onnx_root / "m1" / "onnx-fp32").predict(x)
    assert np.abs(ort_out - onnx_out).max() < 1e-5


def test_onnx_fp16_keeps_float32_io(tmp_path, ckpts):
    meta = export_verified(ckpts[False], tmp_path, "m", "onnx", "fp16")
    assert meta["verification"]["parity"]["max_abs_delta"] < 5e-2
    assert meta["verification"]["parity"]["top1_agreement"] == 1.0
    assert meta["input"]["dtype"] == "float32"


def test_onnx_optimizer_is_recorded(tmp_path, onnx_root):
    from vitedge.export.onnx import optimize_onnx

    meta = artefact.read_meta(onnx_root / "m0" / "onnx-fp32")
    path = tmp_path / "m.onnx"
    shutil.copyfile(onnx_root / "m0" / "onnx-fp32" / "model.onnx", path)
    record = optimize_onnx(path, meta["config"], mode="auto")
    assert {"applied", "fused", "ms_before", "ms_after"} <= set(record)
    assert record["fused"].get("Attention", 0) > 0  # each block's attention fused into one node
    assert optimize_onnx(path, meta["config"], mode="off") == {"applied": False, "mode": "off"}


# --------------------------------------------------------------------------- the hybrid (conv stem)
@pytest.fixture(scope="module", params=["cls", "seq"])
def hybrid_ckpt(tmp_path_factory, request):
    """A conv-stem ViT whose BatchNorm running statistics are not the identity, so folding is tested;
    with the class token and with CCT sequence pooling (`pool`), both with a distillation token."""
    torch.manual_seed(0)
    model = create_model("hybrid-micro-48", distilled=True, depth=2, pool=request.param).train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(32, 1, 48, 48) * 1.7 + 0.4)
    path = tmp_path_factory.mktemp("hybrid") / "hybrid.pt"
    save_model(path, model.eval(), Preprocess(), list(CLASSES), {})
    return path


def test_hybrid_exports_fold_batchnorm_and_match_torch(tmp_path, hybrid_ckpt):
    import onnx
    import onnxruntime as ort

    from vitedge.checkpoints import load_model

    meta = export_verified(hybrid_ckpt, tmp_path, "h", "onnx", "fp32", optimize="off")
    assert meta["verification"]["parity"]["max_abs_delta"] < TOL
    proto = onnx.load(str(tmp_path / "h" / "onnx-fp32" / "model.onnx"))
    ops = {n.op_type for n in proto.graph.node}
    assert "Conv" in ops and "BatchNormalization" not in ops  # BN folded into the stem's convs
    # against the unfolded checkpoint as trained, not only against the folded copy
    reference, _ = load_model(hybrid_ckpt)
    x = _inputs(5)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(tmp_path / "h" / "onnx-fp32" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(sess.run(["logits"], {"input": x})[0] - expected).max() < TOL
    ort_meta = export_verified(hybrid_ckpt, tmp_path, "h", "ort", "fp32")
    assert ort_meta["verification"]["parity"]["max_abs_delta"] < TOL


def test_hybrid_coreml_spec(tmp_path, hybrid_ckpt):
    meta = export_verified(hybrid_ckpt, tmp_path, "h", "coreml", "fp16")
    assert meta["format"] == "coreml" and meta["config"]["stem"] == "conv"


@pytest.mark.slow
def test_hybrid_executorch_matches_torch(tmp_path, hybrid_ckpt):
    meta = export_verified(hybrid_ckpt, tmp_path, "h", "executorch", "fp32")
    assert meta["verification"]["parity"]["max_abs_delta"] < TOL


# --------------------------------------------------------------------------- ExecuTorch
@pytest.mark.slow
def test_executorch_matches_torch(tmp_path):
    # two blocks keep XNNPACK lowering (the slow part, ~15 s/block on 2 busy cores) inside a minute
    ckpt = _checkpoint(tmp_path / "et.pt", distilled=True, depth=2)
    meta = export_verified(ckpt, tmp_path, "m", "executorch", "fp32")
    assert meta["file"] == "model.pte" and meta["input"]["max_batch"] == 1
    assert meta["verification"]["parity"]["max_abs_delta"] < TOL  # batch 5 through a batch-1 program
    delegation = meta["delegation"]
    # the SDPA decomposition leaves no safe-softmax ops behind; LayerNorm is all XNNPACK lacks
    assert not {"aten_where_self", "aten_any_dim", "aten_logical_not_default"} & set(delegation["not_delegated_ops"])
    # measured: 13 for two blocks (23 for four); the dynamic-batch SDPA graph gave ~10 per block
    assert delegation["delegated_subgraphs"] <= 6 * 2 + 2


# --------------------------------------------------------------------------- Core ML
@pytest.fixture(scope="module")
def fer_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("fer")
    (d / "data").mkdir()
    (d / "data" / "manifest.json").write_text(json.dumps({"source": {"kind": "zip"}}))
    return _checkpoint(d / "fer.pt", distilled=False, meta={"data": str(d / "data")})


@pytest.fixture(scope="module")
def coreml_root(tmp_path_factory, fer_ckpt):
    root = tmp_path_factory.mktemp("coreml")
    for precision in ("fp16", "int8"):
        export_verified(fer_ckpt, root, "m", "coreml", precision)
    return root


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_coreml_spec_and_weights(coreml_root, precision):
    import coremltools as ct

    meta = artefact.read_meta(coreml_root / "m" / f"coreml-{precision}")
    checks = meta["verification"]
    assert checks["coreml_spec"]["labels"] == list(CLASSES)
    assert checks["coreml_weights"]["checked"] >= 4 * 4 + 1  # 4 linears per block, patch embedding
    if precision == "fp16":
        assert checks["coreml_weights"]["max_error"] < 1e-3
    else:
        assert checks["coreml_weights"]["max_error"] <= 0.6 and meta["quantization"]["weights"] == "int8"
    assert "macOS" in checks["parity"]["skipped"]

    mlmodel = ct.models.MLModel(str(coreml_root / "m" / f"coreml-{precision}" / "model.mlpackage"),
                                skip_model_load=True)
    spec = mlmodel.get_spec()
    image = spec.description.input[0].type.imageType
    assert (image.width, image.height) == (48, 48) and image.colorSpace == image.GRAYSCALE
    assert "FER-2013" in mlmodel.license and "research use only" in mlmodel.license
    assert mlmodel.short_description and mlmodel.author == "vitedge"
    assert json.loads(mlmodel.user_defined_metadata["vitedge.classes"]) == list(CLASSES)


def test_coreml_int8_weights_dequantise_within_a_step(coreml_root, fer_ckpt):
    from vitedge.export.coreml import read_program, read_weights

    fp16, int8 = (artefact.read_meta(coreml_root / "m" / f"coreml-{p}") for p in ("fp16", "int8"))
    assert int8["size_bytes"] < 0.7 * fp16["size_bytes"]
    model, _ = common.load_source(fer_ckpt)
    weights = read_weights(read_program(coreml_root / "m" / "coreml-int8" / "model.mlpackage")[1])
    qkv = model.blocks[0].attn.qkv.weight.detach().numpy()
    step = np.abs(qkv).max(axis=1, keepdims=True) / 127  # per output channel
    assert (np.abs(weights["p_model_blocks_0_attn_qkv_weight"] - qkv) <= 0.6 * step).all()


def test_training_data_licence(tmp_path):
    assert artefact.training_data({"meta": {}})["kind"] == "unknown"
    (tmp_path / "manifest.json").write_text(json.dumps({"source": {"kind": "synthetic"}}))
    assert "Apache" in artefact.training_data({"meta": {"data": str(tmp_path)}})["license"]
    (tmp_path / "manifest.json").write_text(json.dumps({"source": {"kind": "csv"}}))
    assert artefact.training_data({"meta": {"data": str(tmp_path)}})["license"] == artefact.FER_LICENSE


# --------------------------------------------------------------------------- meta.json contract
def test_meta_contract_and_errors(tmp_path, ckpts):
    _, info = common.load_source(ckpts[False])
    art = artefact.artefact_dir(tmp_path, "teacher", "onnx", "fp32")
    assert art == tmp_path / "teacher" / "onnx-fp32"
    with pytest.raises(ValueError, match="unknown format"):
        artefact.artefact_dir(tmp_path, "teacher", "tflite", "fp32")
    with pytest.raises(ValueError, match="unknown precision"):
        artefact.artefact_dir(tmp_path, "teacher", "onnx", "int4")
    with pytest.raises(ArtefactError, match="not found"):
        artefact.read_meta(art)
    art.mkdir(parents=True)
    with pytest.raises(ArtefactError, match="does not exist"):
        artefact.write_meta(art, "onnx", "fp32", "model.onnx", info, 1.0)
    (art / "model.onnx").write_bytes(b"x" * 10)
    with pytest.raises(ArtefactError, match="meta.json is missing"):
        artefact.read_meta(art)
    meta = artefact.write_meta(art, "onnx", "fp32", "model.onnx", info, 1.23456, quantization={"method": "test"})
    for key in ("format", "precision", "file", "model_name", "source_checkpoint", "source_sha256", "config",
                "preprocess", "classes", "input", "output", "size_bytes", "export_seconds", "machine", "versions"):
        assert key in meta, key
    assert meta["model_name"] == "teacher" and meta["size_bytes"] == 10 and meta["quantization"] == {"method": "test"}
    assert artefact.read_meta(art / "model.onnx") == artefact.read_meta(art) == meta  # model file or dir
    (art / "model.onnx").unlink()
    with pytest.raises(ArtefactError, match="model file 'model.onnx'"):
        artefact.read_meta(art)
    (art / "meta.json").write_text(json.dumps({"format": "onnx"}))
    with pytest.raises(ArtefactError, match="incomplete"):
        artefact.read_meta(art)


def test_export_program_has_dynamic_batch(ckpts):
    model, _ = common.load_source(ckpts[True])
    program = common.export_program(model, max_batch=16)
    x = torch.from_numpy(_inputs(5))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x))


def test_cli(tmp_path, tiny_ckpt, capsys):
    from vitedge.export.__main__ import main

    ckpts = {False: tiny_ckpt}
    assert main(["--checkpoint", str(ckpts[False]), "--model-name", "s", "--format", "onnx", "--precision", "int8",
                 "--out", str(tmp_path)]) == 2
    assert "vitedge.quantize" in capsys.readouterr().err
    assert main(["--checkpoint", str(ckpts[False]), "--model-name", "s", "--format", "tensorrt",
                 "--out", str(tmp_path)]) == (0 if _tensorrt_usable() else 3)
    assert "TensorRT" in capsys.readouterr().err or _tensorrt_usable()
    assert main(["--checkpoint", str(tmp_path / "missing.pt"), "--model-name", "s", "--format", "onnx",
                 "--out", str(tmp_path)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["--checkpoint", str(ckpts[False]), "--model-name", "s", "--format", "onnx", "--out", str(tmp_path),
                 "--opts-json", '{"optimize": "off"}']) == 0
    out = capsys.readouterr().out
    assert "onnx-fp32: model.onnx" in out and "MB in" in out and "max |Δlogit|" in out


# --------------------------------------------------------------------------- TensorRT (pure parts, fake module)
def _tensorrt_usable() -> bool:
    try:
        hosts.load_tensorrt()
        hosts.gpu_identity()
        return True
    except RuntimeUnavailable:
        return False


def test_engine_key_and_profile():
    assert hosts.engine_key("NVIDIA H100 80GB HBM3", (9, 0), "10.13.0.35") == "nvidia-h100-80gb-hbm3-sm90-trt10.13"
    assert hosts.engine_key("Orin (nvgpu)", (8, 7), "10.3.0") == "orin-nvgpu-sm87-trt10.3"
    assert hosts.engine_file("k") == "model-k.engine"
    assert trt_export.normalise_profile(None) == trt_export.DEFAULT_PROFILE
    assert trt_export.normalise_profile([1, 4, 32]) == (1, 4, 32)
    for bad in [(0, 1, 2), (4, 2, 8), (1, 2), (1, 2.5, 4), (True, 2, 3)]:
        with pytest.raises(ValueError):
            trt_export.normalise_profile(bad)
    with pytest.raises(ValueError, match="max batch"):
        trt_export.normalise_profile((1, 8, 512), max_batch=256)


def test_tensorrt_unavailable_is_clear(monkeypatch):
    if _tensorrt_usable():
        pytest.skip("TensorRT and a GPU are present on this host")
    with pytest.raises(RuntimeUnavailable, match="TensorRT"):
        hosts.host_engine_key()
    stubs_only = types.ModuleType("tensorrt")  # what tensorrt-stubs alone makes importable
    monkeypatch.setitem(sys.modules, "tensorrt", stubs_only)
    with pytest.raises(RuntimeUnavailable, match="type stubs"):
        hosts.load_tensorrt()


class _Recorder:
    """A fake `tensorrt` module: just enough of the TensorRT 10 API to drive build_engine."""

    def __init__(self, parse_ok: bool = True):
        self.calls: list[tuple] = []
        rec = self
        self.__version__ = "10.13.0.35"

        class Enum:
            def __init__(self, **values):
                self.__dict__.update(values)

        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, level: None})
        self.NetworkDefinitionCreationFlag = Enum(STRONGLY_TYPED=1)
        self.MemoryPoolType = Enum(WORKSPACE="workspace")
        self.BuilderFlag = Enum(FP16="fp16")
        self.Dims = lambda shape: tuple(shape)

        class Tensor:
            name, shape = "input", (-1, 1, 48, 48)

        class Network:
            num_inputs = 1

            def get_input(self, i):
                return Tensor()

        class Parser:
            num_errors = 0 if parse_ok else 1

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                rec.calls.append(("parse", path))
                return parse_ok

            def get_error(self, i):
                return "Unsupported op Foo"

        class Cache:
            def __init__(self, data):
                self.data = data

            def serialize(self):
                return b"cache:" + self.data

        class Config:
            def set_memory_pool_limit(self, pool, size):
                rec.calls.append(("pool", pool, size))

            def set_flag(self, flag):
                rec.calls.append(("flag", flag))

            def add_optimization_profile(self, profile):
                rec.calls.append(("profile", profile.shapes))

            def create_timing_cache(self, data):
                rec.calls.append(("cache_in", bytes(data)))
                self.cache = Cache(bytes(data))
                return self.cache

            def set_timing_cache(self, cache, ignore_mismatch):
                rec.calls.append(("cache_set", ignore_mismatch))

            def get_timing_cache(self):
                return self.cache

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = (lo, opt, hi)

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                rec.calls.append(("network", flags))
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"ENGINE"

        self.Builder, self.OnnxParser = Builder, Parser


@pytest.fixture
def fake_trt(monkeypatch):
    fake = _Recorder()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(hosts, "gpu_identity", lambda: {"name": "NVIDIA Fake GPU", "compute_capability": (9, 0)})
    return fake


def test_build_engine_with_fake_tensorrt(tmp_path, fake_trt):
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(b"onnx")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    engine = trt_export.build_engine(onnx_path, tmp_path, "fp16", profile=(1, 4, 32), timing_cache=cache,
                                     workspace_mib=256)
    assert engine.name == "model-nvidia-fake-gpu-sm90-trt10.13.engine" and engine.read_bytes() == b"ENGINE"
    calls = fake_trt.calls
    assert ("network", 0) in calls  # explicit batch (the only kind in TensorRT 10)
    assert ("flag", "fp16") in calls and ("pool", "workspace", 256 << 20) in calls
    assert ("profile", {"input": ((1, 1, 48, 48), (4, 1, 48, 48), (32, 1, 48, 48))}) in calls
    assert ("cache_in", b"old") in calls and cache.read_bytes() == b"cache:old"  # loaded, then saved back

    fake_trt.calls.clear()
    trt_export.build_engine(onnx_path, tmp_path, "int8", int8_qdq=True)
    assert ("network", 1 << 1) in fake_trt.calls and not any(c[0] == "flag" for c in fake_trt.calls)
    with pytest.raises(ValueError, match="quantiser"):
        trt_export.build_engine(onnx_path, tmp_path, "int8")


def test_build_engine_reports_parse_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", _Recorder(parse_ok=False))
    monkeypatch.setattr(hosts, "gpu_identity", lambda: {"name": "G", "compute_capability": (8, 6)})
    with pytest.raises(ArtefactError, match="Unsupported op Foo"):
        trt_export.build_engine(tmp_path / "m.onnx", tmp_path, "fp32")


def test_engine_for_another_gpu_is_rebuilt_or_refused(tmp_path, tiny_ckpt, fake_trt, monkeypatch):
    meta = export_verified(tiny_ckpt, tmp_path, "m", "tensorrt", "fp16", profile=[1, 2, 8], verify=False)
    art = tmp_path / "m" / "tensorrt-fp16"
    assert meta["engine_key"]["key"] == "nvidia-fake-gpu-sm90-trt10.13" and meta["input"]["max_batch"] == 8
    assert meta["profile"] == {"min": 1, "opt": 2, "max": 8} and (art / "model.onnx").is_file()
    hosts.check_engine_key(meta, "nvidia-fake-gpu-sm90-trt10.13")
    with pytest.raises(ArtefactError, match="built for nvidia-fake-gpu-sm90-trt10.13.*orin"):
        hosts.check_engine_key(meta, "orin-sm87-trt10.3")
    # moved to another GPU: the exporter rebuilds from the ONNX kept in the artefact
    monkeypatch.setattr(hosts, "gpu_identity", lambda: {"name": "Jetson Orin", "compute_capability": (8, 7)})
    engine = trt_export.ensure_engine(art)
    assert engine.name == "model-jetson-orin-sm87-trt10.13.engine"
    assert artefact.read_meta(art)["engine_key"]["key"] == "jetson-orin-sm87-trt10.13"


def test_real_tensorrt_engine(tmp_path, ckpts):
    if not _tensorrt_usable():
        pytest.skip("TensorRT needs the tensorrt package (NVIDIA's index) and a CUDA GPU; neither is on this host")
    from vitedge import runtimes

    meta = export_verified(ckpts[False], tmp_path, "m", "tensorrt", "fp32")
    assert meta["verification"]["parity"]["max_abs_delta"] < 1e-3
    rt = runtimes.load(tmp_path / "m" / "tensorrt-fp32", device="cuda")
    assert rt.name == "trt"


def test_tensorrt_code_typechecks_against_stubs(tmp_path):
    """mypy over the TensorRT code with tensorrt-stubs (patched copy: the generated stubs have syntax slips)."""
    import importlib.util

    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install mypy)")
    site = [Path(p) for p in sys.path if (Path(p) / "tensorrt_bindings" / "tensorrt.pyi").is_file()]
    if not site:
        pytest.skip("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs)")
    stubs = tmp_path / "stubs"
    shutil.copytree(site[0] / "tensorrt", stubs / "tensorrt")
    shutil.copytree(site[0] / "tensorrt_bindings", stubs / "tensorrt_bindings")
    pyi = stubs / "tensorrt_bindings" / "tensorrt.pyi"
    text = pyi.read_text()
    text = text.replace("in: list[", "in_: list[").replace("channel_axis: int)", "channel_axis: int = 0)")
    pyi.write_text(text)
    init = stubs / "tensorrt" / "__init__.pyi"
    init.write_text(init.read_text().replace("import tensorrt_libs as tensorrt_libs", ""))
    cfg = tmp_path / "mypy.ini"
    # only tensorrt's stubs are followed: analysing torch's would take a minute
    cfg.write_text("[mypy]\nignore_missing_imports = True\nfollow_imports = skip\n"
                   "[mypy-tensorrt_bindings.*]\nignore_errors = True\nfollow_imports = normal\n"
                   "[mypy-tensorrt]\nignore_errors = True\nfollow_imports = normal\n")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(cfg), "--cache-dir", str(tmp_path / "c"),
                           "vitedge/export/tensorrt.py", "vitedge/runtimes/trt_rt.py"],
                          cwd=repo, env={"MYPYPATH": str(stubs), "PATH": ""}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
