"""ONNX Runtime: `.onnx` and `.ort` artefacts, CPU or the CUDA execution provider.

`optimized_cache=DIR` (CPU): the first load saves ORT's optimised graph for this model, ORT version,
CPU and session settings under DIR; later loads read it with graph optimisation off, so start-up
does not pay the optimisation again (measured: 15 -> 4-6 ms to the first result for the hybrid
student; batch-1 latency unchanged). The saved graph holds layout transforms for this CPU, hence
the key: another CPU or ORT version makes its own.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.runtimes.base import Runtime, RuntimeUnavailable, register


@register
class OnnxRuntime(Runtime):
    name = "onnx"
    formats = ("onnx", "ort")
    devices = ("cpu", "cuda")
    priority = 40
    options = ("optimized_cache",)

    @classmethod
    def check(cls, device: str = "cpu") -> None:
        super().check(device)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeUnavailable(cls.name, "onnxruntime is not installed",
                                     "pip install onnxruntime (or onnxruntime-gpu for CUDA)") from exc
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeUnavailable(cls.name, "the CUDA execution provider is missing from this onnxruntime build",
                                     "pip install onnxruntime-gpu on a host with an NVIDIA GPU, or use --device cpu")

    @classmethod
    def version(cls) -> str:
        import onnxruntime as ort

        return ort.__version__

    def __init__(self, path, meta: dict[str, Any], device: str = "cpu", threads: int | None = None,
                 optimized_cache: str | None = None):
        super().__init__(path, meta, device, threads)
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        # session settings the artefact was measured fastest with (meta.json `ort_session`, written by the
        # exporter / quantiser), e.g. ORT fusions whose kernels are slower at batch 1 left out
        self.session_settings = dict(meta.get("ort_session") or {}) if device == "cpu" else {}
        if "allow_spinning" in self.session_settings:
            so.add_session_config_entry("session.intra_op.allow_spinning",
                                        "1" if self.session_settings["allow_spinning"] else "0")
        disabled = list(self.session_settings.get("disabled_optimizers", [])) or None
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        model_file, self.cache = str(self.path / meta["file"]), None
        if optimized_cache and device == "cpu" and meta["format"] == "onnx":
            model_file = self._use_cache(Path(optimized_cache).expanduser(), model_file, so, ort)
        try:
            self.session = ort.InferenceSession(model_file, so, providers=providers, disabled_optimizers=disabled)
            if self.cache and self.cache["state"] == "written":
                os.replace(self.cache["tmp"], self.cache["path"])  # complete: later loads may use it
                del self.cache["tmp"]
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            from vitedge.runtimes.base import ArtefactError

            raise ArtefactError(f"ONNX Runtime cannot load {self.path / meta['file']}: {exc}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.providers = self.session.get_providers()

    def _use_cache(self, folder: Path, model_file: str, so, ort) -> str:
        """The cached optimised graph when there is one (optimisation off), else `model_file` with ORT told
        to save its optimised graph (renamed into the cache once the session exists)."""
        import hashlib
        import json

        from vitedge.io import sha256_file
        from vitedge.sysinfo import machine_info

        cpu = machine_info()["cpu"]
        key = hashlib.sha256(json.dumps([sha256_file(model_file), ort.__version__, cpu["model"], cpu["features"],
                                         self.session_settings], sort_keys=True).encode()).hexdigest()[:20]
        cached = folder / f"{Path(model_file).stem}-{key}.onnx"
        if cached.is_file():
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            self.cache = {"path": str(cached), "state": "used"}
            return str(cached)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{cached.name}.{os.getpid()}.tmp"
        so.optimized_model_filepath = str(tmp)
        self.cache = {"path": str(cached), "state": "written", "tmp": str(tmp)}
        return model_file

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def info(self) -> dict[str, Any]:
        return {**super().info(), "providers": self.providers, "session": self.session_settings,
                "optimized_cache": self.cache}
