"""Run any vitedge artefact (or checkpoint) behind one interface.

    rt = vitedge.runtimes.load("results/default/artefacts/student/onnx-fp32")   # or a .pt / .onnx / .pte ...
    logits = rt.predict(rt.preprocess(gray_uint8_faces))                        # (N, 1, 48, 48) -> (N, 7)

`load(path, runtime="auto")` runs the artefact on the backend the format table names for its
format (`vitedge.artefact.FORMAT_TABLE`'s `runtime`), and for a model folder holding several
artefacts, the fastest artefact that runs here (the table's `folder_rank`). Errors are
`RuntimeUnavailable` (the backend cannot run here: says what is missing and how to get it) and
`ArtefactError` (the path is not a usable artefact, or not one for the runtime asked for).

Backends are the classes the table names, one small class per `*_rt.py` module of this package.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vitedge.artefact import (
    CHECKPOINT,
    CHECKPOINT_RUNTIME,
    CHECKPOINT_SUFFIXES,
    FORMAT_TABLE,
    META,
    OUTPUT_NAME,
    ArtefactError,
    RuntimeUnavailable,
    input_spec,
    load_object,
    read_meta,
    runtime_path,
)
from vitedge.bench import available_cores, measure
from vitedge.checkpoints import read_checkpoint
from vitedge.hosts import resolve_device
from vitedge.io import file_size
from vitedge.runtimes.base import Runtime
from vitedge.sysinfo import cpu_info

__all__ = ["load", "available", "runtimes", "registry", "resolve", "Runtime", "RuntimeUnavailable", "ArtefactError",
           "measure_bs1_threads"]

# aliases people type
ALIASES = {"tensorrt": "trt", "onnxruntime": "onnx", "ort": "onnx", "pytorch": "torch", "et": "executorch",
           "tflite": "litert"}


def registry() -> dict[str, type[Runtime]]:
    """{backend name: class} of every backend the format table names (and the checkpoints'), fastest
    first. Read from the table on each call, so a format added at run time brings its backend."""
    paths = dict.fromkeys([*(spec.runtime for spec in FORMAT_TABLE.values()), CHECKPOINT_RUNTIME])
    classes: list[type[Runtime]] = [load_object(p) for p in paths]
    return {c.name: c for c in sorted(classes, key=lambda c: -c.priority)}


def runtimes() -> list[str]:
    """Backend names, fastest first."""
    return list(registry())


def available(device: str = "cpu") -> dict[str, str | None]:
    """{runtime: None if it runs here, else the reason it does not}."""
    out: dict[str, str | None] = {}
    for name, cls in registry().items():
        try:
            cls.check(device)
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
        backends = registry()
        if runtime not in backends:
            raise ValueError(f"unknown runtime '{runtime}'; choose from auto, {', '.join(backends)}")
        cls = backends[runtime]
        if not cls.serves(meta["format"]):
            raise ArtefactError(f"{path} is a {meta['format']} artefact, which the {runtime} runtime cannot run "
                                f"(it runs {', '.join(cls.served_formats())}); use --runtime auto")
    else:
        served_by = runtime_path(meta["format"])
        if served_by is None:
            raise ArtefactError(f"no runtime runs {meta['format']} artefacts ({path}): the format table "
                                f"(vitedge.artefact.FORMAT_TABLE) has no such format")
        cls = load_object(served_by)
    cls.check(device)  # RuntimeUnavailable: its reason says what to install
    return cls, art, meta


# the precisions of a model folder in order of preference on each device (the formats' order is the
# format table's `folder_rank`)
_PRECISIONS = {"cpu": ["fp32", "int8", "fp16"], "cuda": ["fp16", "fp32", "int8"]}
UNRANKED = 99  # a format the table ranks for no folder on this device: tried after the ranked ones


def _folder_key(meta: dict[str, Any], device: str) -> tuple[int, int]:
    """Sort key of an artefact in a model folder: its format's rank on `device`, then its precision's."""
    spec = FORMAT_TABLE.get(meta["format"])
    precs = _PRECISIONS.get(device, _PRECISIONS["cpu"])
    return ((spec.folder_rank.get(device, UNRANKED) if spec else UNRANKED),
            precs.index(meta["precision"]) if meta["precision"] in precs else UNRANKED)


def _best_in_folder(folder: Path, runtime: str, device: str) -> tuple[type[Runtime], Path, dict]:
    """A model folder (<root>/<model_name>/) -> the fastest artefact in it that runs here."""
    options = []
    for meta_path in folder.glob(f"*/{META}"):
        try:
            art, meta = describe(meta_path.parent)
        except ArtefactError:
            continue
        if meta["format"] == "onnx" and meta["precision"] == "fp16" and device == "cpu":
            continue  # half on a CPU is emulated: slower than fp32
        options.append((art, meta))
    errors: list[Exception] = []
    for art, meta in sorted(options, key=lambda am: _folder_key(am[1], device)):
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
