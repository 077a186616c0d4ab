"""Checking an artefact against the PyTorch model it came from, and exporting with that check.

It sits above both `vitedge.export` (which builds artefacts) and `vitedge.runtimes` (which runs
them): the check runs the artefact through the runtime that would serve it, on random inputs of
an odd batch size (to exercise the dynamic batch), and compares logits. A format that cannot run
on this host may name a static check in the format table (`FormatSpec.static_verify`; Core ML on
Linux: spec and weights read back).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitedge import runtimes
from vitedge.artefact import (
    FORMAT_TABLE,
    META,
    ArtefactError,
    RuntimeUnavailable,
    artefact_dir,
    load_object,
    read_meta,
    update_meta,
)
from vitedge.export import export_artefact
from vitedge.export.common import example_input, load_source
from vitedge.metrics import parity_metrics

# max |logit - torch logit| an export may show on random inputs before it is rejected; int8 is
# judged by the quantiser's accuracy gate instead
TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}


def export_verified(checkpoint: str | Path, root: str | Path, model_name: str, fmt: str, precision: str,
                    verify: bool = True, **opts: Any) -> dict[str, Any]:
    """`vitedge.export.export_artefact`, then `verify_artefact`: the result lands in meta.json's
    `verification`; a failed check removes meta.json, so no complete-looking artefact is left."""
    if not verify:
        return export_artefact(checkpoint, root, model_name, fmt, precision, **opts)
    model, info = load_source(checkpoint)
    meta = export_artefact(checkpoint, root, model_name, fmt, precision, source=(model, info), **opts)
    return verify_and_record(artefact_dir(root, model_name, fmt, precision), model, meta)


def verify_and_record(art_dir: Path, model: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """`verify_artefact`, its result written to meta.json's `verification`; on failure meta.json is
    removed, so no complete-looking artefact is left. Returns the updated meta.json."""
    try:
        checks = verify_artefact(art_dir, model, meta)
    except Exception:
        (art_dir / META).unlink(missing_ok=True)
        raise
    return update_meta(art_dir, verification=checks)


def _reference_logits(model: torch.nn.Module, x: torch.Tensor, meta: dict[str, Any]) -> np.ndarray:
    with torch.no_grad():
        ref = model(x)
    if meta.get("logits_normalised"):  # e.g. Core ML returns log-probabilities (same softmax)
        ref = torch.log_softmax(ref, dim=-1)
    return ref.numpy()


def verify_artefact(art_dir: str | Path, model: Any, meta: dict[str, Any] | None = None,
                    batch: int = 5, seed: int = 1) -> dict[str, Any]:
    """Check an artefact against the PyTorch model it came from; raise ArtefactError if it is off.
    Returns what was checked, for meta.json."""
    meta = meta or read_meta(art_dir)
    checks: dict[str, Any] = {}
    spec = FORMAT_TABLE.get(meta["format"])
    if spec is not None and spec.static_verify:
        checks.update(load_object(spec.static_verify)(Path(art_dir), meta, model))
    try:
        rt = runtimes.load(art_dir, runtime="auto", device="cpu")
    except RuntimeUnavailable as exc:
        checks["parity"] = {"skipped": str(exc)}
        return checks
    x = example_input(model, batch, seed)
    parity = parity_metrics(rt.predict(x.numpy()), _reference_logits(model, x, meta))
    parity.update(runtime=rt.name, batch=batch)
    checks["parity"] = parity
    tol = TOLERANCE.get(meta["precision"])
    if tol is not None and not (np.isfinite(parity["max_abs_delta"]) and parity["max_abs_delta"] <= tol):
        raise ArtefactError(f"{art_dir}: outputs differ from PyTorch by {parity['max_abs_delta']:.3g} "
                            f"(tolerance {tol} for {meta['precision']})")
    return checks
