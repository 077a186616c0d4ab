"""ExecuTorch: `.pte` programs (XNNPACK-delegated) through the `executorch.runtime` Python bindings."""
from __future__ import annotations

import importlib.metadata
from typing import Any

import numpy as np
import torch

from vitedge.artefact import RuntimeUnavailable
from vitedge.runtimes.base import Runtime, register


@register
class ExecuTorchRuntime(Runtime):
    name = "executorch"
    formats = ("executorch",)
    priority = 30

    @classmethod
    def check(cls, device: str = "cpu") -> None:
        super().check(device)
        try:
            import executorch.runtime  # noqa: F401  (optional toolchain: the export extra)
        except ImportError as exc:
            raise RuntimeUnavailable(cls.name, f"the executorch runtime cannot be imported ({exc})",
                                     "pip install executorch (Linux or macOS)") from exc

    @classmethod
    def version(cls) -> str:
        return importlib.metadata.version("executorch")

    def __init__(self, path, meta: dict[str, Any], device: str = "cpu", threads: int | None = None):
        super().__init__(path, meta, device, threads)
        from executorch.runtime import Runtime as ETRuntime  # optional toolchain

        program = ETRuntime.get().load_program(self.path / meta["file"])
        self.method = program.load_method("forward")
        self.static_batch: int | None = meta.get("static_batch")

    def _predict(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if self.static_batch and n < self.static_batch:  # a fixed-batch program: pad the last piece
            x = np.concatenate([x, np.zeros((self.static_batch - n, *x.shape[1:]), x.dtype)])
        return self.method.execute([torch.from_numpy(x)])[0].numpy()[:n]
