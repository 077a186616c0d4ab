"""TensorRT: serialized engines on an NVIDIA GPU. Input/output buffers are torch CUDA tensors,
so no pycuda / cuda-python is needed."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vitedge.artefact import ArtefactError, RuntimeUnavailable
from vitedge.hosts import check_engine_key, gpu_identity, host_engine_key, load_tensorrt
from vitedge.runtimes.base import Runtime


class TensorRTRuntime(Runtime):
    name = "trt"
    devices = ("cuda",)
    priority = 100

    @classmethod
    def check(cls, device: str = "cpu") -> None:
        load_tensorrt()  # RuntimeUnavailable with the install hint
        if device != "cuda":
            raise RuntimeUnavailable(cls.name, f"TensorRT runs on an NVIDIA GPU, not on device '{device}'",
                                     "pass device='cuda' (--device cuda), or use an onnx artefact on CPU")
        gpu_identity()

    @classmethod
    def version(cls) -> str:
        return load_tensorrt().__version__

    def __init__(self, path, meta: dict[str, Any], device: str = "cuda", threads: int | None = None):
        super().__init__(path, meta, device, threads)
        load_tensorrt()
        import tensorrt as trt  # optional toolchain: NVIDIA's wheel (load_tensorrt said it is the real one)

        check_engine_key(meta, host_engine_key()["key"])  # a foreign engine would fail or, worse, misbehave
        self.logger = trt.Logger(trt.Logger.WARNING)
        engine = trt.Runtime(self.logger).deserialize_cuda_engine((self.path / meta["file"]).read_bytes())
        if engine is None:
            raise ArtefactError(f"TensorRT cannot deserialize {self.path / meta['file']}")
        self.engine, self.context = engine, engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.stream = torch.cuda.Stream()

    def _predict(self, x: np.ndarray) -> np.ndarray:
        with torch.cuda.stream(self.stream):
            inp = torch.from_numpy(x).to("cuda", non_blocking=False)
            self.context.set_input_shape(self.input_name, tuple(inp.shape))
            out = torch.empty((len(x), len(self.classes)), dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(self.input_name, inp.data_ptr())
            self.context.set_tensor_address(self.output_name, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
        self.stream.synchronize()
        return out.cpu().numpy()

    def info(self) -> dict[str, Any]:
        return {**super().info(), "engine_key": self.meta.get("engine_key", {}).get("key")}
