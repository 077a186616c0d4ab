"""LiteRT (formerly TensorFlow Lite): `.tflite` models through the `ai-edge-litert` interpreter,
XNNPACK delegate on (its default CPU path; `xnnpack=False` runs the builtin reference kernels).

The model has a fixed batch of 1 (what litert-torch converts; a phone classifies one face per
call): larger batches are split by `Runtime.predict`. Full-integer models take and return int8
tensors; they are quantised and dequantised here with the tensor's own scale and zero point, so
every LiteRT artefact maps float32 faces to float32 logits like the other runtimes.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Iterator

import numpy as np

from vitedge.artefact import ArtefactError
from vitedge.runtimes.base import Runtime, Toolchain


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C++ logging, which Python cannot filter) for the block: vitedge's CLIs
    promise one line per problem on stderr, and an INFO line on every load is not one. Failures still
    reach the caller as exceptions, which say what went wrong."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (an embedding host): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class LiteRTRuntime(Runtime):
    name = "litert"
    priority = 35
    options = ("xnnpack",)
    threaded = True
    toolchain = Toolchain("ai_edge_litert.interpreter", "ai-edge-litert", "pip install ai-edge-litert")

    def __init__(self, path, meta: dict[str, Any], device: str = "cpu", threads: int | None = None,
                 xnnpack: bool = True):
        super().__init__(path, meta, device, threads)
        from ai_edge_litert.interpreter import Interpreter, OpResolverType  # optional toolchain

        resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        # a batch-1 model makes only batch-1 calls: its measured batch-1 thread count serves all of them
        self.pool = self.bs1_threads if self.max_batch == 1 else threads
        try:
            with _quiet_stderr():  # LiteRT's C++ logs "INFO: Created ... XNNPACK delegate" on fd 2 when it applies it
                self.interpreter = Interpreter(model_path=str(self.path / meta["file"]),
                                               num_threads=self.pool or None, experimental_op_resolver_type=resolver)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ArtefactError(f"LiteRT cannot load {self.path / meta['file']}: {exc}") from exc
        self.xnnpack = xnnpack
        self.inp, self.out = self.interpreter.get_input_details()[0], self.interpreter.get_output_details()[0]
        self.batch = int(self.inp["shape"][0])
        if self.max_batch is None or self.max_batch > self.batch:
            self.max_batch = self.batch  # the model's own batch bounds every call

    def _predict(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if n < self.batch:  # a fixed-batch model: pad the last piece
            x = np.concatenate([x, np.zeros((self.batch - n, *x.shape[1:]), x.dtype)])
        if self.inp["dtype"] != np.float32:  # full-integer model: int8 in
            scale, zero = self.inp["quantization"]
            info = np.iinfo(self.inp["dtype"])
            x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(self.inp["dtype"])
        self.interpreter.set_tensor(self.inp["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.out["index"])
        if self.out["dtype"] != np.float32:  # ... and int8 out
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return np.array(y[:n], dtype=np.float32)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "pool_threads": self.pool, "delegate": "XNNPACK" if self.xnnpack else "none (builtin kernels)",
                "io": f"{np.dtype(self.inp['dtype']).name} in, {np.dtype(self.out['dtype']).name} out"}
