"""The one runtime interface that `vitedge.runtimes.load` chooses from.

A backend is one small class in one `*_rt.py` file in this package; which artefact formats it
runs is `vitedge.artefact.FORMAT_TABLE`'s `runtime` (a "module:Class" path), so the class says only
how to run a model, and a new format names its runtime in the table. Optional toolchains (tensorrt,
coremltools, executorch, ai-edge-litert) are imported inside the class, never at module level,
so listing the backends needs none of them and a missing one shows up as a clear
`RuntimeUnavailable` rather than an ImportError.
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from vitedge.artefact import CHECKPOINT, FORMAT_TABLE, ArtefactError, RuntimeUnavailable, load_object, runtime_path
from vitedge.batching import map_batches
from vitedge.bench import available_cores
from vitedge.preprocess import Preprocess
from vitedge.sysinfo import cpu_info

class Toolchain(NamedTuple):
    """The optional Python package a backend needs: what to import, its distribution, how to get it."""

    module: str
    distribution: str
    install: str


def bs1_threads(meta: dict[str, Any], threads: int | None) -> int | None:
    """Intra-op threads for batch-1 calls: the count this artefact was measured fastest with at batch 1
    on this CPU model (meta.json `bs1_threads`, written by the quantiser), never above the caller's
    `threads` (None: every core); `threads` itself where nothing was measured for this CPU.

    Why: an int8 ViT of this size runs each op in microseconds, and a second thread costs more in
    hand-off than it brings (the shipped FER student's records on the 2-core Xeon: LiteRT int8 0.41 ms
    on 1 thread, 0.59 ms on 2; ONNX int8 0.61 vs 0.65 ms), while the same model at batch 32, or in
    fp32, gains from every core."""
    record = meta.get("bs1_threads") or {}
    if not record.get("best") or record.get("cpu") != cpu_info()["model"]:
        return threads
    return min(int(record["best"]), threads or available_cores())


class Runtime:
    """A loaded model that maps preprocessed faces (N, 1, H, W) float32 to logits (N, C) float32."""

    name: ClassVar[str]
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    # larger runs first in `auto`; roughly "how fast on the hardware it needs"
    priority: ClassVar[int] = 0
    # backend-specific keyword options `load(..., **options)` accepts (e.g. torch's dtype, compile)
    options: ClassVar[tuple[str, ...]] = ()
    # the optional package the backend runs on (checked by `check`, named by `version`), if any
    toolchain: ClassVar[Toolchain | None] = None
    # whether `threads` sizes this backend's own intra-op pool (an ORT session, a LiteRT interpreter), so
    # batch-1 calls can use the artefact's measured `bs1_threads`; torch's pool is process-wide, ExecuTorch's
    # XNNPACK pool is not settable from Python
    threaded: ClassVar[bool] = False

    @classmethod
    def serves(cls, fmt: str) -> bool:
        """Whether this backend runs `fmt` artefacts (meta["format"]): the format table names it."""
        path = runtime_path(fmt)
        return path is not None and load_object(path) is cls

    @classmethod
    def served_formats(cls) -> tuple[str, ...]:
        """The artefact formats this backend runs (the checkpoint too, for the torch backend)."""
        return tuple(f for f in (*FORMAT_TABLE, CHECKPOINT) if cls.serves(f))

    @classmethod
    def check(cls, device: str = "cpu") -> None:
        """Raise RuntimeUnavailable when this backend cannot run on this host / device."""
        if device not in cls.devices:
            raise RuntimeUnavailable(cls.name, f"device '{device}' is not supported (supported: {', '.join(cls.devices)})")
        if cls.toolchain is not None:
            try:
                __import__(cls.toolchain.module)  # the import statement's own machinery (and its hooks)
            except ImportError as exc:
                raise RuntimeUnavailable(cls.name, f"{cls.toolchain.module} cannot be imported ({exc})",
                                         cls.toolchain.install) from exc

    @classmethod
    def version(cls) -> str:
        return importlib.metadata.version(cls.toolchain.distribution) if cls.toolchain else ""

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - set(cls.options))
        if unknown:
            raise RuntimeUnavailable(cls.name, f"option(s) {', '.join(unknown)} not supported"
                                     + (f" (it takes {', '.join(cls.options)})" if cls.options else ""))

    def __init__(self, path: Path, meta: dict[str, Any], device: str = "cpu", threads: int | None = None):
        if not self.serves(meta["format"]):
            raise ArtefactError(f"{path} is a {meta['format']} artefact; the {self.name} runtime runs "
                                f"{', '.join(self.served_formats())} (use --runtime auto, or the matching runtime)")
        self.check(device)
        self.path, self.meta, self.device, self.threads = Path(path), meta, device, threads
        self.bs1_threads = bs1_threads(meta, threads) if self.threaded and device == "cpu" else threads
        self.preprocess = Preprocess.from_dict(meta["preprocess"])
        self.classes: list[str] = list(meta["classes"])
        shape = meta["input"]["shape"]
        self.input_shape = tuple(int(s) for s in shape[1:])
        self.max_batch: int | None = meta["input"].get("max_batch")

    # ------------------------------------------------------------------ the interface
    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 -> (N, num_classes) float32 logits. Batches above the artefact's
        maximum are split, so callers never need to know it."""
        if hasattr(x, "detach"):  # a torch tensor
            x = x.detach().cpu().numpy()
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{self.name}.predict expects a numpy array, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise TypeError(f"{self.name}.predict expects float32 input, got {x.dtype} (use runtime.preprocess)")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape or x.shape[0] == 0:
            raise ValueError(f"{self.name}.predict expects input of shape (N>=1, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")
        out = map_batches(self._predict, np.ascontiguousarray(x), self.max_batch or 0)
        if out.ndim != 2 or out.shape != (len(x), len(self.classes)):
            # meta.json's classes are checked against its declared output; this is the model's actual one
            raise ArtefactError(f"{self.path}: the model returned logits of shape {tuple(out.shape)}, "
                                f"but its {len(self.classes)} classes need ({len(x)}, {len(self.classes)})")
        return out.astype(np.float32, copy=False)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        return {"runtime": self.name, "version": self.version(), "device": self.device,
                "format": self.meta["format"], "precision": self.meta["precision"], "threads": self.threads,
                "bs1_threads": self.bs1_threads,
                "path": str(self.path), "model_name": self.meta.get("model_name")}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.meta['format']}-{self.meta['precision']} {self.path} on {self.device}>"
