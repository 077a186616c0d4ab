"""TensorRT engines (TensorRT 10 Python API), built from the artefact's own ONNX file.

An engine only runs on the GPU model and TensorRT version it was built with, so the file
name carries that key (`model-nvidia-h100-80gb-hbm3-sm90-trt10.13.engine`) and meta.json
records it; the runtime refuses an engine whose key is not the host's, and `ensure_engine`
rebuilds it from the `model.onnx` kept beside it. The build follows NVIDIA's developer
guide: Builder -> explicit-batch network (or STRONGLY_TYPED for Q/DQ int8 graphs, whose
precisions come from the graph) -> OnnxParser -> BuilderConfig (fp16 flag, workspace
limit, one optimisation profile min/opt/max over the batch, timing cache loaded and saved)
-> serialized engine.

`tensorrt` is an optional toolchain: `vitedge.hosts.load_tensorrt` checks for the real API (the type
stubs alone install an empty namespace package), then the builder imports it in the function
that uses it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from vitedge.artefact import ArtefactError, read_meta, update_meta
from vitedge.export.onnx import export_onnx
from vitedge.hosts import engine_file, host_engine_key, load_tensorrt
from vitedge.io import atomic_write_bytes, file_size

DEFAULT_PROFILE = (1, 8, 64)  # batch min / opt / max
DEFAULT_WORKSPACE_MIB = 1024
TIMING_CACHE = "timing.cache"


def normalise_profile(profile: Sequence[int] | None, max_batch: int | None = None) -> tuple[int, int, int]:
    """Validate a (min, opt, max) batch profile: integers with 1 <= min <= opt <= max (<= max_batch)."""
    values = tuple(DEFAULT_PROFILE if profile is None else profile)
    if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"a TensorRT profile is three integers (min, opt, max batch), got {profile!r}")
    lo, opt, hi = values
    if not 1 <= lo <= opt <= hi:
        raise ValueError(f"TensorRT profile needs 1 <= min <= opt <= max, got {values}")
    if max_batch is not None and hi > max_batch:
        raise ValueError(f"TensorRT profile max {hi} exceeds the model's max batch {max_batch}")
    return lo, opt, hi


def build_engine(onnx_path: str | Path, out_dir: str | Path, precision: str = "fp16",
                 profile: Sequence[int] | None = DEFAULT_PROFILE, timing_cache: str | Path | None = None,
                 int8_qdq: bool = False, workspace_mib: int = DEFAULT_WORKSPACE_MIB) -> Path:
    """Build and save an engine for this host's GPU from an ONNX file; returns the engine path.

    precision: fp32 | fp16 (BuilderFlag.FP16) | int8 (requires int8_qdq: a Q/DQ ONNX from the
    quantiser, built as a strongly typed network, so no calibrator is involved).
    timing_cache: a file to load tactic timings from (if present) and save them back to;
    rebuilding the same model then takes seconds rather than minutes.
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"unknown TensorRT precision '{precision}'")
    if precision == "int8" and not int8_qdq:
        raise ValueError("int8 TensorRT engines are built from the quantiser's Q/DQ ONNX (int8_qdq=True); "
                         "run `python -m vitedge.quantize`")
    lo, opt, hi = normalise_profile(profile)
    load_tensorrt()
    import tensorrt as trt  # optional toolchain: NVIDIA's wheel, GPU hosts only (checked by load_tensorrt)

    key = host_engine_key()["key"]
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10: every network is explicit-batch (flags 0); strongly typed networks take each
    # tensor's precision from the graph, which is what a Q/DQ int8 model needs
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if int8_qdq else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtefactError(f"TensorRT cannot parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if precision == "fp16" and not int8_qdq:
        config.set_flag(trt.BuilderFlag.FP16)
    shapes = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = [int(d) for d in tensor.shape[1:]]  # (C, H, W); the batch dim is -1 in the ONNX
        shapes.set_shape(tensor.name, trt.Dims([lo, *rest]), trt.Dims([opt, *rest]), trt.Dims([hi, *rest]))
    config.add_optimization_profile(shapes)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cache_bytes), False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ArtefactError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    path = Path(out_dir) / engine_file(key)
    atomic_write_bytes(path, bytes(serialized))
    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    return path


def check_host() -> None:
    """Raise RuntimeUnavailable on hosts without TensorRT and a GPU, before anything is touched."""
    host_engine_key()


def build(model, info: dict[str, Any], art_dir: Path, precision: str, profile: Sequence[int] | None = None,
          timing_cache: str | Path | None = None, workspace_mib: int = DEFAULT_WORKSPACE_MIB,
          **_: Any) -> tuple[str, dict[str, Any]]:
    """The `tensorrt-<precision>` artefact: the engine for this host plus the fp32 ONNX it came
    from (kept so the engine can be rebuilt on another GPU without the checkpoint)."""
    lo, opt, hi = normalise_profile(profile)
    host = host_engine_key()
    onnx_path = export_onnx(model, art_dir / "model.onnx", info)  # plain ONNX: TensorRT cannot run ORT fusions
    cache = Path(timing_cache) if timing_cache else art_dir / TIMING_CACHE
    engine = build_engine(onnx_path, art_dir, precision, (lo, opt, hi), cache, workspace_mib=workspace_mib)
    return engine.name, {"engine_key": host, "profile": {"min": lo, "opt": opt, "max": hi}, "max_batch": hi,
                         "onnx": onnx_path.name, "timing_cache": cache.name if cache.parent == art_dir else str(cache)}


def ensure_engine(art_dir: str | Path) -> Path:
    """Rebuild the artefact's engine for this host when its key differs; returns the engine path."""
    art_dir = Path(art_dir)
    meta = read_meta(art_dir)
    if meta["format"] != "tensorrt":
        raise ArtefactError(f"{art_dir} is a {meta['format']} artefact, not a TensorRT one")
    host = host_engine_key()
    if meta.get("engine_key", {}).get("key") == host["key"]:
        return art_dir / meta["file"]
    onnx_path = art_dir / meta.get("onnx", "model.onnx")
    if not onnx_path.is_file():
        raise ArtefactError(f"{art_dir}: cannot rebuild the engine, its ONNX source {onnx_path.name} is missing")
    prof = meta.get("profile", {})
    quantised = meta["precision"] == "int8"
    engine = build_engine(onnx_path, art_dir, meta["precision"], (prof.get("min", 1), prof.get("opt", 8),
                          prof.get("max", 64)), art_dir / TIMING_CACHE, int8_qdq=quantised)
    update_meta(art_dir, file=engine.name, engine_key=host, size_bytes=file_size(engine))
    return engine
