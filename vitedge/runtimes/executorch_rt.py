"""ExecuTorch: `.pte` programs (XNNPACK-delegated) through the `executorch.runtime` Python bindings."""
from __future__ import annotations

from typing import Any

import numpy as np

from vitedge.runtimes.base import Runtime, RuntimeUnavailable, register


@register
class ExecuTorchRuntime(Runtime):
    name = "executorch"
    formats = ("executorch",)
    priority = 30

    @classmethod
    def check(cls, device: str = "cpu") -> None:
        super().check(device)
        try:
            import executorch.runtime  # noqa: F401
        except ImportError as exc:
            raise RuntimeUnavailable(cls.name, f"the executorch runtime cannot be imported ({exc})",
                                     "pip install executorch (Linux or macOS)") from exc

    @classmethod
    def version(cls) -> str:
        import importlib.metadata

        return importlib.metadata.version("executorch")

    def __init__(self, path, meta: dict[str, Any], device: str = "cpu", threads: int | None = None):
        super().__init__(path, meta, device, threads)
        from executorch.runtime import Runtime as ETRuntime

        program = ETRuntime.get().load_program(self.path / meta["file"])
        self.method = program.load_method("forward")

    def _predict(self, x: np.ndarray) -> np.ndarray:
        import torch

        return self.method.execute([torch.from_numpy(x)])[0].numpy()
