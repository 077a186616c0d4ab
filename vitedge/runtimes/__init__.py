"""Run any vitedge artefact (or checkpoint) behind one interface.

    rt = vitedge.runtimes.load("results/default/artefacts/student/onnx-fp32")   # or a .pt / .onnx / .pte ...
    logits = rt.predict(rt.preprocess(gray_uint8_faces))                        # (N, 1, 48, 48) -> (N, 7)

`load(path, runtime="auto")` picks the fastest backend available on this host for the
artefact (trt > onnx-cuda > onnx > litert > executorch > torch > coreml-off-macOS), and for a model
folder holding several artefacts, the fastest artefact. Errors are `RuntimeUnavailable`
(the backend cannot run here: says what is missing and how to get it) and `ArtefactError`
(the path is not a usable artefact, or not one for the runtime asked for).

Backends are the `*_rt.py` modules of this package, found automatically.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.artefact import (
    CHECKPOINT,
    CHECKPOINT_SUFFIXES,
    META,
    OUTPUT_NAME,
    ArtefactError,
    RuntimeUnavailable,
    input_spec,
    read_meta,
)
from vitedge.bench import available_cores, measure
from vitedge.checkpoints import read_checkpoint
from vitedge.hosts import resolve_device
from vitedge.io import file_size
from vitedge.runtimes.base import REGISTRY, Runtime, register
from vitedge.sysinfo import cpu_info

__all__ = ["load", "available", "runtimes", "resolve", "Runtime", "RuntimeUnavailable", "ArtefactError", "register",
           "measure_bs1_threads"]

# aliases people type
ALIASES = {"tensorrt": "trt", "onnxruntime": "onnx", "ort": "onnx", "pytorch": "torch", "et": "executorch",
           "tflite": "litert"}


def _discover() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if mod.name.endswith("_rt"):
            importlib.import_module(f"{__name__}.{mod.name}")


_discover()


def runtimes() -> list[str]:
    """Registered backend names, fastest first."""
    return [c.name for c in sorted(REGISTRY.values(), key=lambda c: -c.priority)]


def available(device: str = "cpu") -> dict[str, str | None]:
    """{runtime: None if it runs here, else the reason it does not}."""
    out: dict[str, str | None] = {}
    for name in runtimes():
        try:
            REGISTRY[name].check(device)
            out[name] = None
        except RuntimeUnavailable as exc:
            out[name] = str(exc)
    return out


def _checkpoint_meta(path: Path) -> dict[str, Any]:
    """A meta.json-shaped description of a vitedge checkpoint (read without building the model)."""
    try:
        ckpt = read_checkpoint(path)  # config, preprocessing, classes and shapes checked: data from anywhere
    except (FileNotFoundError, ValueError) as exc:
        raise ArtefactError(str(exc)) from None
    cfg = ckpt["config"]
    return {"format": CHECKPOINT, "precision": "fp32", "file": path.name, "model_name": path.stem,
            "source_checkpoint": str(path), "source_sha256": "", "config": cfg, "preprocess": ckpt["preprocess"],
            "classes": list(ckpt["classes"]),
            "input": input_spec(cfg), "output": {"name": OUTPUT_NAME}, "size_bytes": file_size(path)}


def describe(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(artefact dir or checkpoint file, its meta) for any path `load` accepts."""
    path = Path(path)
    if not path.exists():
        raise ArtefactError(f"model not found: {path}")
    if path.is_file() and path.suffix in CHECKPOINT_SUFFIXES and not (path.parent / META).is_file():
        return path, _checkpoint_meta(path)
    meta = read_meta(path)  # artefact dir, its meta.json or its model file
    art_dir = path.parent if (path.name == META or path.name == meta["file"]) else path
    return art_dir, meta


def _candidates(fmt: str) -> list[type[Runtime]]:
    return sorted((c for c in REGISTRY.values() if fmt in c.formats), key=lambda c: -c.priority)


def resolve(path: str | Path, runtime: str = "auto", device: str = "cpu") -> tuple[type[Runtime], Path, dict]:
    """Which backend class would `load` use for this path: (class, artefact path, meta). Raises the
    same errors `load` would."""
    runtime = ALIASES.get(runtime, runtime)
    device = resolve_device(device)  # "auto" here means "cuda if visible"; `load` adds the CPU fallback
    path = Path(path)
    if path.is_dir() and not (path / META).is_file() and any(path.glob(f"*/{META}")):
        return _best_in_folder(path, runtime, device)
    art, meta = describe(path)
    if runtime != "auto":
        if runtime not in REGISTRY:
            raise ValueError(f"unknown runtime '{runtime}'; choose from auto, {', '.join(runtimes())}")
        cls = REGISTRY[runtime]
        if meta["format"] not in cls.formats:
            raise ArtefactError(f"{path} is a {meta['format']} artefact, which the {runtime} runtime cannot run "
                                f"(it runs {', '.join(cls.formats)}); use --runtime auto")
        cls.check(device)
        return cls, art, meta
    reasons = []
    for cls in _candidates(meta["format"]):
        try:
            cls.check(device)
            return cls, art, meta
        except RuntimeUnavailable as exc:
            reasons.append(exc)
    if not reasons:
        raise ArtefactError(f"no runtime runs {meta['format']} artefacts ({path})")
    raise reasons[0]  # the preferred backend's reason says best what to install


# the artefact formats in order of preference on each device, and precisions likewise
_PREFERENCE = {"cpu": (["onnx", "ort", "litert", "executorch", "coreml", CHECKPOINT], ["fp32", "int8", "fp16"]),
               "cuda": (["tensorrt", "onnx", CHECKPOINT], ["fp16", "fp32", "int8"])}


def _best_in_folder(folder: Path, runtime: str, device: str) -> tuple[type[Runtime], Path, dict]:
    """A model folder (<root>/<model_name>/) -> the fastest artefact in it that runs here."""
    fmts, precs = _PREFERENCE.get(device, _PREFERENCE["cpu"])
    options = []
    for meta_path in folder.glob(f"*/{META}"):
        try:
            art, meta = describe(meta_path.parent)
        except ArtefactError:
            continue
        if meta["format"] == "onnx" and meta["precision"] == "fp16" and device == "cpu":
            continue  # half on a CPU is emulated: slower than fp32
        options.append((art, meta))
    key = lambda am: (fmts.index(am[1]["format"]) if am[1]["format"] in fmts else 99,  # noqa: E731
                      precs.index(am[1]["precision"]) if am[1]["precision"] in precs else 99)
    errors: list[Exception] = []
    for art, meta in sorted(options, key=key):
        try:
            return resolve(art, runtime, device)
        except (RuntimeUnavailable, ArtefactError) as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
    raise ArtefactError(f"{folder} holds no usable artefact")


def load(path: str | Path, runtime: str = "auto", device: str = "cpu", threads: int | None = None,
         **options: Any) -> Runtime:
    """Load an artefact dir / model file / vitedge checkpoint / model folder with the given backend.

    device: cpu | cuda | auto (the GPU when one is visible and the artefact's runtime can use it
    here, else the CPU). options: backend-specific (torch: dtype="fp16"|"bf16", compile=True);
    an option the chosen backend does not take is RuntimeUnavailable (that backend cannot do it).
    """
    if device == "auto":
        if resolve_device("auto") == "cuda":
            try:
                return load(path, runtime, "cuda", threads, **options)
            except RuntimeUnavailable:
                pass  # e.g. onnxruntime without the CUDA provider: the CPU still works
        device = "cpu"
    cls, art, meta = resolve(path, runtime, device)
    cls.check_options(options)
    return cls(art, meta, device=device, threads=threads, **options)


# fewer threads win a tie: within this fraction of the fastest, the smaller pool is chosen (a core left
# free costs nothing at equal speed, and batch-1 timings of sub-millisecond models wobble by a few %)
BS1_TIE = 0.03


def measure_bs1_threads(path: str | Path, seconds: float = 0.3, max_threads: int | None = None
                        ) -> dict[str, Any] | None:
    """Time an artefact at batch 1 with 1, 2, 4 ... up to every core, on its own backend; the fewest
    threads within BS1_TIE of the fastest is `best`. None for backends whose pool is not their own
    (`Runtime.threaded`) or that do not run here. What `meta.json` records as `bs1_threads`."""
    try:
        cls, art, meta = resolve(path, "auto", "cpu")
    except (RuntimeUnavailable, ArtefactError):
        return None
    if not cls.threaded:
        return None
    top = max_threads or available_cores()
    counts = sorted({min(2 ** k, top) for k in range(top.bit_length() + 1)})
    x = np.random.default_rng(0).standard_normal((1, *(int(s) for s in meta["input"]["shape"][1:]))
                                                 ).astype(np.float32)
    ms: dict[int, float] = {}
    for t in counts:
        rt = cls(art, {**meta, "bs1_threads": None}, device="cpu", threads=t)
        ms[t] = measure(lambda: rt.predict(x), warmup=10, warmup_seconds=0.05, min_iters=30, max_iters=5000,
                        max_seconds=seconds).summary_ms()["p50"]
    fastest = min(ms.values())
    best = min(t for t, v in ms.items() if v <= fastest * (1 + BS1_TIE))
    return {"best": best, "bs1_ms": {str(t): round(v, 4) for t, v in ms.items()},
            "cpu": cpu_info()["model"], "runtime": cls.name}
