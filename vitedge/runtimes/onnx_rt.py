"""ONNX Runtime: `.onnx` and `.ort` artefacts, CPU or the CUDA execution provider."""
from __future__ import annotations

from typing import Any

import numpy as np

from vitedge.runtimes.base import Runtime, RuntimeUnavailable, register


@register
class OnnxRuntime(Runtime):
    name = "onnx"
    formats = ("onnx", "ort")
    devices = ("cpu", "cuda")
    priority = 40

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

    def __init__(self, path, meta: dict[str, Any], device: str = "cpu", threads: int | None = None):
        super().__init__(path, meta, device, threads)
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(self.path / meta["file"]), so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            from vitedge.runtimes.base import ArtefactError

            raise ArtefactError(f"ONNX Runtime cannot load {self.path / meta['file']}: {exc}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.providers = self.session.get_providers()

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def info(self) -> dict[str, Any]:
        return {**super().info(), "providers": self.providers}
