"""ONNX Runtime sessions: the one place an artefact's session settings become `SessionOptions`.

The exporter (timing the transformer fusion), the quantiser (timing int8 candidates) and the
`onnx` runtime backend all open sessions here, so a setting measured faster at export time is
the setting the runtime uses.

Settings an artefact can carry in meta.json (`ort_session`):
- `disabled_optimizers`: ORT graph optimisers to leave out at session start;
- `allow_spinning`: whether idle intra-op threads spin (fast at batch 1, burns a core).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime as ort

# SkipLayerNormFusion: ORT fuses residual Add + LayerNorm into SkipLayerNormalization at session
# start; on this model size its CPU kernel is ~4x slower than the two ops it replaces (41 vs 9 + 6 µs
# per block at width 128, ORT 1.32, measured with benchmarks/ort_profile.py), so the fusion step
# leaves it out and artefacts may record that sessions disable it.
NO_SKIP_LAYERNORM = {"disabled_optimizers": ["SkipLayerNormFusion"]}
CPU = ["CPUExecutionProvider"]
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def session_options(threads: int | None = None, settings: dict[str, Any] | None = None,
                    optimise: bool = True, save_optimised_to: str | Path | None = None) -> ort.SessionOptions:
    """SessionOptions for `threads` intra-op threads (None: ORT's default) and an artefact's settings."""
    so = ort.SessionOptions()
    so.log_severity_level = 3  # warnings about unused initialisers etc. are noise for users
    if threads:
        so.intra_op_num_threads, so.inter_op_num_threads = int(threads), 1
    settings = settings or {}
    if "allow_spinning" in settings:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings["allow_spinning"] else "0")
    if not optimise:  # a graph ORT already optimised and saved for this host
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if save_optimised_to is not None:
        so.optimized_model_filepath = str(save_optimised_to)
    return so


def open_session(model: str | Path | bytes, threads: int | None = None, settings: dict[str, Any] | None = None,
                 device: str = "cpu", **options: Any) -> ort.InferenceSession:
    """An InferenceSession on CPU (or CUDA with CPU fallback) with the artefact's settings.
    `options` go to `session_options` (optimise, save_optimised_to)."""
    so = session_options(threads, settings, **options)
    disabled = list((settings or {}).get("disabled_optimizers", [])) or None
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, so, providers=CUDA if device == "cuda" else CPU,
                                disabled_optimizers=disabled)


def predictor(session: ort.InferenceSession) -> Callable[[np.ndarray], np.ndarray]:
    """x (N, C, H, W) -> logits through `session`'s first input and output."""
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]
