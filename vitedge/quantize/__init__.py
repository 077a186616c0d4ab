"""Accuracy-gated int8 quantisation of a vitedge checkpoint, one backend per deployment format.

    meta = quantize("models/student.pt", "student", "onnx", "results/default/data", "results/default/artefacts",
                    QuantizeConfig(max_drop=1.0, calibration=256))
    # -> results/default/artefacts/student/onnx-int8/{model.onnx, meta.json}

Formats and how they quantise (details in each module's docstring):

| format     | module                       | int8 recipe                                                     |
|------------|------------------------------|-----------------------------------------------------------------|
| onnx       | `vitedge.quantize.onnx`      | ORT dynamic / static QDQ (MinMax, Percentile, Entropy), +fusion |
| tensorrt   | `vitedge.quantize.onnx`      | Q/DQ ONNX placed for TensorRT; engine built on a GPU host       |
| torch      | `vitedge.quantize.pt2e`      | torchao PT2E + X86InductorQuantizer, saved as `.pt2`            |
| executorch | `vitedge.quantize.pt2e`      | PT2E + XNNPACKQuantizer, lowered to an XNNPACK `.pte`           |
| coreml     | `vitedge.quantize.coreml`    | coremltools int8 weights (+ activations on macOS)               |
| litert     | `vitedge.quantize.litert`    | ai-edge-quantizer dynamic-range / full-integer int8 `.tflite`   |

Every backend goes through the same gate and fallback (`vitedge.quantize.core`).
CLI: `python -m vitedge.quantize --help`.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from vitedge.artefact import artefact_dir
from vitedge.data import load_splits
from vitedge.export.common import load_source
from vitedge.quantize.core import Backend, QuantizationError, QuantizeConfig, quantize_to_artefact

__all__ = ["quantize", "QuantizeConfig", "QuantizationError", "BACKENDS", "backend_class", "FORMATS"]

BACKENDS = {"onnx": "vitedge.quantize.onnx:OnnxBackend", "tensorrt": "vitedge.quantize.onnx:TensorRTBackend",
            "torch": "vitedge.quantize.pt2e:TorchBackend", "executorch": "vitedge.quantize.pt2e:ExecuTorchBackend",
            "coreml": "vitedge.quantize.coreml:CoreMLBackend", "litert": "vitedge.quantize.litert:LiteRTBackend"}
FORMATS = tuple(BACKENDS)


def backend_class(fmt: str) -> type[Backend]:
    if fmt not in BACKENDS:
        raise ValueError(f"no int8 backend for format '{fmt}'; choose from {', '.join(BACKENDS)}")
    module, name = BACKENDS[fmt].split(":")
    return getattr(importlib.import_module(module), name)


def quantize(checkpoint: str | Path, model_name: str, fmt: str, data_dir: str | Path, out_root: str | Path,
             cfg: QuantizeConfig | None = None, splits: dict | None = None) -> dict[str, Any]:
    """Quantise `checkpoint` to `<out_root>/<model_name>/<fmt>-int8/` through the accuracy gate.

    Returns the artefact's meta.json (with a `quantization` record). `splits` may be passed
    instead of reading `data_dir` (tests). Raises QuantizationError if no variant passes.
    """
    cls = backend_class(fmt)
    model, info = load_source(checkpoint)
    splits = splits if splits is not None else load_splits(data_dir)
    return quantize_to_artefact(cls, model, info, splits, cfg or QuantizeConfig(),
                                artefact_dir(out_root, model_name, fmt, "int8"))
