"""PyTorch: a vitedge checkpoint (.pt), or a torch.export program (.pt2, e.g. the quantiser's int8)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch._inductor.config as inductor_config

# PT2E int8 programs hold quantized_decomposed ops: their library must be registered before loading one
import torch.ao.quantization.fx._decomposed  # noqa: F401

from vitedge.artefact import CHECKPOINT, ArtefactError, RuntimeUnavailable
from vitedge.checkpoints import load_model
from vitedge.pt2 import check_archive
from vitedge.runtimes.base import Runtime


class TorchRuntime(Runtime):
    name = "torch"
    devices = ("cpu", "cuda")
    priority = 10
    options = ("dtype", "compile")
    DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

    @classmethod
    def check(cls, device: str = "cpu") -> None:
        super().check(device)
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeUnavailable(cls.name, "no CUDA GPU is visible to PyTorch",
                                     "use --device cpu, or install a CUDA build of torch on a GPU host")

    @classmethod
    def version(cls) -> str:
        return torch.__version__

    def __init__(self, path, meta: dict[str, Any], device: str = "cpu", threads: int | None = None,
                 dtype: str = "fp32", compile: bool = False):
        super().__init__(path, meta, device, threads)
        if dtype not in self.DTYPES:
            raise ValueError(f"torch runtime dtype must be one of {', '.join(self.DTYPES)}, got {dtype!r}")
        self.dtype, self.compiled = getattr(torch, self.DTYPES[dtype]), bool(compile)

        if threads:
            torch.set_num_threads(threads)  # process-wide: torch has no per-model thread pool
        self.module: Any
        if meta["format"] == CHECKPOINT:
            self.module = load_model(self.path)[0].to(device)
        else:  # a saved torch.export program: checked first, torch.export.load would unpickle what it holds
            program = self.path / meta["file"]
            check_archive(program)
            try:
                self.module = torch.export.load(str(program)).module().to(device)
            except Exception as exc:  # noqa: BLE001 - a broken archive fails in many ways inside torch
                raise ArtefactError(f"cannot load the torch program {program}: {type(exc).__name__}: "
                                    f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}") from exc
        if self.dtype != torch.float32:
            self.module = self.module.to(self.dtype)  # weights and activations in half / bfloat16
        if self.compiled:
            inductor_config.freezing = True  # weights are constants: Inductor pre-packs them (int8 needs it)
            self.module = torch.compile(self.module)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(x).to(self.device, self.dtype)).float().cpu().numpy()

    def info(self) -> dict[str, Any]:
        return {**super().info(), "dtype": str(self.dtype).removeprefix("torch."), "compile": self.compiled}
