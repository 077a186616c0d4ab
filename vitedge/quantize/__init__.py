"""Accuracy-gated int8 quantisation of a vitedge checkpoint, one backend per deployment format.

    meta = quantize("models/student.pt", "student", "onnx", "results/default/data", "results/default/artefacts",
                    QuantizeConfig(max_drop=1.0, calibration=256))
    # -> results/default/artefacts/student/onnx-int8/{model.onnx, meta.json}

Which formats have an int8 backend, and which class it is, is `vitedge.artefact.FORMAT_TABLE`'s
`int8`. The backends, by module (details in each module's docstring):

- `vitedge.quantize.onnx`: ORT dynamic / static QDQ (MinMax, Percentile, Entropy), +fusion; and the
  Q/DQ ONNX placed for TensorRT (the engine built on a GPU host)
- `vitedge.quantize.pt2e`: torchao PT2E, saved as a `.pt2` program (X86InductorQuantizer) or lowered
  to an XNNPACK `.pte` (XNNPACKQuantizer)
- `vitedge.quantize.coreml`: coremltools int8 weights (+ activations on macOS)
- `vitedge.quantize.litert`: ai-edge-quantizer dynamic-range / full-integer int8 `.tflite`

Every backend goes through the same gate and fallback (`vitedge.quantize.core`).
CLI: `python -m vitedge.quantize --help`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vitedge.artefact import FORMAT_TABLE, artefact_dir, int8_formats, load_object
from vitedge.data import load_splits
from vitedge.export.common import load_source
from vitedge.quantize.core import Backend, QuantizationError, QuantizeConfig, quantize_to_artefact

__all__ = ["quantize", "QuantizeConfig", "QuantizationError", "BACKENDS", "backend_class", "FORMATS"]

# format -> "module:Class", as the table held it at import (a reader's view; `backend_class` reads the table)
BACKENDS = {f: spec.int8 for f, spec in FORMAT_TABLE.items() if spec.int8}
FORMATS = tuple(BACKENDS)


def backend_class(fmt: str) -> type[Backend]:
    """The quantiser backend that makes `fmt`'s int8 artefacts (FORMAT_TABLE's `int8`), imported now."""
    spec = FORMAT_TABLE.get(fmt)
    if spec is None or spec.int8 is None:
        raise ValueError(f"no int8 backend for format '{fmt}'; choose from {', '.join(int8_formats())}")
    return load_object(spec.int8)


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
