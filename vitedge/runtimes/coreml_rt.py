"""Core ML: `.mlpackage` ML programs. Predicting needs macOS (Core ML itself); elsewhere only the
exporter's spec and weight checks run."""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from vitedge.artefact import ArtefactError, RuntimeUnavailable
from vitedge.hosts import is_macos
from vitedge.runtimes.base import Runtime


class CoreMLRuntime(Runtime):
    name = "coreml"
    devices = ("cpu", "ane", "gpu", "all")
    priority = 50  # on a Mac the Neural Engine beats every other option here

    @classmethod
    def check(cls, device: str = "cpu") -> None:
        super().check(device)
        if not is_macos():
            raise RuntimeUnavailable(cls.name, "Core ML predicts only on macOS",
                                     "copy the .mlpackage to a Mac or iOS device; see runtimes/ios/")
        try:
            import coremltools  # noqa: F401  (optional toolchain: the export extra)
        except ImportError as exc:
            raise RuntimeUnavailable(cls.name, "coremltools is not installed", "pip install coremltools") from exc

    @classmethod
    def version(cls) -> str:
        import coremltools as ct  # optional toolchain

        return ct.__version__

    def __init__(self, path, meta: dict[str, Any], device: str = "cpu", threads: int | None = None):
        super().__init__(path, meta, device, threads)
        import coremltools as ct  # optional toolchain

        units = {"cpu": ct.ComputeUnit.CPU_ONLY, "gpu": ct.ComputeUnit.CPU_AND_GPU,
                 "ane": ct.ComputeUnit.CPU_AND_NE, "all": ct.ComputeUnit.ALL}[device]
        self.model = ct.models.MLModel(str(self.path / meta["file"]), compute_units=units)
        spec = self.model.get_spec()
        self.input_name = spec.description.input[0].name
        self.output_name = (meta.get("coreml") or {}).get("logits_output")
        if not isinstance(self.output_name, str):
            raise ArtefactError(f"{self.path}: meta.json lacks 'coreml.logits_output' (the model's logits output)")

    def _predict(self, x: np.ndarray) -> np.ndarray:
        # the model takes an 8-bit grayscale image and applies the normalisation itself (ImageType
        # scale/bias), so undo it here: runtimes all take the same normalised float input
        pre = self.preprocess
        out = []
        for face in x[:, 0]:
            pixels = np.clip(np.rint(pre.to_unit(face) * 255.0), 0, 255).astype(np.uint8)
            probs = self.model.predict({self.input_name: Image.fromarray(pixels, mode="L")})[self.output_name]
            # the classifier outputs {label: probability}; log-probabilities are logits with the same softmax
            out.append(np.log(np.maximum([probs[c] for c in self.classes], 1e-30)).astype(np.float32))
        return np.stack(out)
