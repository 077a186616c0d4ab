"""LiteRT (`.tflite`, formerly TensorFlow Lite) through `litert-torch`, the maintained successor of
ai-edge-torch: torch.export -> StableHLO -> the LiteRT converter, no TensorFlow install.

- Fixed batch of 1: litert-torch 0.10 cannot lower the conv stem with a symbolic batch (its JAX
  lowering of the reshape fails), and a phone classifies one face per call anyway. The runtime
  (`vitedge.runtimes.litert_rt`) splits larger batches; meta.json says `max_batch: 1`.
- Input stays NCHW `(1, 1, 48, 48)` float32 like every other artefact (the converter inserts the
  layout transposes), output the logits; tensor names carry the torch module path, which the
  int8 backend (`vitedge.quantize.litert`) uses to keep units in float.
- int8 comes from the quantiser (`python -m vitedge.quantize --format litert`: ai-edge-quantizer
  dynamic-range or full-integer, with the accuracy gate), not from here.

`check_host` raises RuntimeUnavailable (exit code 3, a skipped row in the workflow) when
litert-torch is not installed: `pip install 'vitedge[litert]'`.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from vitedge.artefact import RuntimeUnavailable
from vitedge.export.common import example_input
from vitedge.io import atomic_path

HOW = "pip install 'vitedge[litert]' (litert-torch, ai-edge-quantizer, ai-edge-litert)"


def check_host() -> None:
    for module, package in (("litert_torch", "litert-torch"), ("ai_edge_litert", "ai-edge-litert")):
        if importlib.util.find_spec(module) is None:
            raise RuntimeUnavailable("litert export", f"{package} is not installed", HOW)


@contextlib.contextmanager
def quiet():
    """litert-torch and ai-edge-quantizer print progress trees and bars: keep CLI output clean."""
    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before


def convert_tflite(model: torch.nn.Module, path: str | Path, batch: int = 1) -> Path:
    """`model` (eval, BatchNorm folded) -> a float32 `.tflite` at a fixed batch, written atomically."""
    check_host()
    import litert_torch  # optional toolchain: the litert extra

    logging.getLogger("absl").setLevel(logging.ERROR)
    path = Path(path)
    with quiet():
        edge = litert_torch.convert(model.eval(), (example_input(model, batch),))
    with atomic_path(path, suffix=".tflite") as tmp:
        with quiet():
            edge.export(str(tmp))
    return path


def op_counts(path: str | Path) -> tuple[dict[str, int], int]:
    """(the model's operators by type, the number of XNNPACK partitions the interpreter made of them):
    one partition means XNNPACK runs the whole graph."""
    from ai_edge_litert.interpreter import Interpreter  # optional toolchain

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    ops = Counter(op["op_name"] for op in it._get_ops_details())
    partitions = ops.pop("DELEGATE", 0)
    return dict(ops.most_common()), partitions


def build(model: torch.nn.Module, info: dict[str, Any], art_dir: Path, precision: str, batch: int = 1,
          **_: Any) -> tuple[str, dict[str, Any]]:
    """The `litert-fp32` artefact: model.tflite (XNNPACK-ready float32, batch 1)."""
    path = convert_tflite(model, art_dir / "model.tflite", batch=batch)
    ops, partitions = op_counts(path)
    return path.name, {"max_batch": batch, "static_batch": batch, "delegate": "XNNPACK (the interpreter's default)",
                       "converter": f"litert-torch {importlib.metadata.version('litert-torch')}",
                       "ops": ops, "xnnpack_partitions": partitions}
