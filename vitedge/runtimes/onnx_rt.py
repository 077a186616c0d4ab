"""ONNX Runtime: `.onnx` and `.ort` artefacts, CPU or the CUDA execution provider.

`optimized_cache=DIR` (CPU): the first load saves ORT's optimised graph for this model, ORT version,
CPU and session settings under DIR; later loads read it with graph optimisation off, so start-up
does not pay the optimisation again (measured: 15 -> 4-6 ms to the first result for the hybrid
student; batch-1 latency unchanged). The saved graph holds layout transforms for this CPU, hence
the key: another CPU or ORT version makes its own.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from vitedge.artefact import ArtefactError, RuntimeUnavailable
from vitedge.io import sha256_file
from vitedge.ort_session import open_session
from vitedge.runtimes.base import Runtime
from vitedge.sysinfo import cpu_info


class OnnxRuntime(Runtime):
    name = "onnx"
    devices = ("cpu", "cuda")
    priority = 40
    options = ("optimized_cache",)
    threaded = True

    @classmethod
    def check(cls, device: str = "cpu") -> None:
        super().check(device)
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeUnavailable(cls.name, "the CUDA execution provider is missing from this onnxruntime build",
                                     "pip install onnxruntime-gpu on a host with an NVIDIA GPU, or use --device cpu")

    @classmethod
    def version(cls) -> str:
        return ort.__version__

    def __init__(self, path, meta: dict[str, Any], device: str = "cpu", threads: int | None = None,
                 optimized_cache: str | None = None):
        super().__init__(path, meta, device, threads)
        # session settings the artefact was measured fastest with (meta.json `ort_session`, written by the
        # exporter / quantiser), e.g. ORT fusions whose kernels are slower at batch 1 left out
        self.session_settings = dict(meta.get("ort_session") or {}) if device == "cpu" else {}
        model_file, self.cache, options = str(self.path / meta["file"]), None, {}
        if optimized_cache and device == "cpu" and meta["format"] == "onnx":
            model_file, options = self._use_cache(Path(optimized_cache).expanduser(), model_file)
        try:
            self.session = open_session(model_file, threads, self.session_settings, device, **options)
            # batch 1 on fewer threads where the artefact was measured faster so (`Runtime.bs1_threads`): a
            # second session of the same graph, a few hundred kB
            self.bs1_session = self.session if self.bs1_threads == threads else open_session(
                model_file, self.bs1_threads, self.session_settings, device,
                **{k: v for k, v in options.items() if k == "optimise"})
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ArtefactError(f"ONNX Runtime cannot load {self.path / meta['file']}: {exc}") from exc
        if self.cache and self.cache["state"] == "written":
            os.replace(self.cache["tmp"], self.cache["path"])  # complete: later loads may use it
            del self.cache["tmp"]
        self.input_name = self.session.get_inputs()[0].name
        self.providers = self.session.get_providers()
        # ORT's dynamic int8 (DynamicQuantizeLinear) takes ONE scale per activation tensor, i.e. per call:
        # in a batch, a face would be quantised with its neighbours' range and its class could change with
        # them (measured on the shipped student, PrivateTest: 68.21% one face per call, 67.99% in calls of
        # 256). One face per call keeps each answer independent of the batch, as an app calling per face sees it.
        self.per_face = dynamic_activations(meta)

    def _use_cache(self, folder: Path, model_file: str) -> tuple[str, dict[str, Any]]:
        """(graph to load, session options): the cached optimised graph when there is one (optimisation
        off), else `model_file` with ORT told to save its optimised graph (renamed into the cache once the
        session exists)."""
        cpu = cpu_info()
        key = hashlib.sha256(json.dumps([sha256_file(model_file), ort.__version__, cpu["model"], cpu["features"],
                                         self.session_settings], sort_keys=True).encode()).hexdigest()[:20]
        cached = folder / f"{Path(model_file).stem}-{key}.onnx"
        if cached.is_file():
            self.cache = {"path": str(cached), "state": "used"}
            return str(cached), {"optimise": False}
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{cached.name}.{os.getpid()}.tmp"
        self.cache = {"path": str(cached), "state": "written", "tmp": str(tmp)}
        return model_file, {"save_optimised_to": tmp}

    def _predict(self, x: np.ndarray) -> np.ndarray:
        if self.per_face and len(x) > 1:
            return np.concatenate([self._predict(x[i:i + 1]) for i in range(len(x))])
        session = self.bs1_session if len(x) == 1 else self.session
        return session.run(None, {self.input_name: x})[0]

    def info(self) -> dict[str, Any]:
        return {**super().info(), "providers": self.providers, "session": self.session_settings,
                "optimized_cache": self.cache, "one_face_per_call": self.per_face}


def dynamic_activations(meta: dict[str, Any]) -> bool:
    """Whether the artefact's int8 activations are quantised per call (ORT dynamic quantisation)."""
    return ((meta.get("quantization") or {}).get("method") or {}).get("kind") == "dynamic"
