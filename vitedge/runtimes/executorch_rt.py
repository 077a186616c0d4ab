"""ExecuTorch: `.pte` programs (XNNPACK-delegated) through the `executorch.runtime` Python bindings."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vitedge.runtimes.base import Runtime, Toolchain


class ExecuTorchRuntime(Runtime):
    name = "executorch"
    priority = 30
    toolchain = Toolchain("executorch.runtime", "executorch", "pip install executorch (Linux or macOS)")

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
