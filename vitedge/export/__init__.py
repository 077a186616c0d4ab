"""Deployment artefacts: one checkpoint -> ONNX, ORT, ExecuTorch, Core ML, TensorRT, LiteRT.

    meta = export_artefact("results/default/models/student.pt", "results/default/artefacts",
                           model_name="student", fmt="onnx", precision="fp32")

Every format starts from the same `torch.export` program (`common.export_program`), is
written atomically, gets the same `meta.json` (`common.write_meta`), and is then checked
against PyTorch by the same step (`verify_artefact`): outputs compared through
`vitedge.runtimes` where the format runs on this host, or the format's own static check
(Core ML on Linux: spec and weights read back). Each format module exposes
`build(model, info, art_dir, precision, **opts) -> (file_name, meta_extras)` and,
optionally, `verify(art_dir, meta, model) -> dict`.

Modules are imported on use so `import vitedge.export` needs none of the toolchains.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from vitedge.export.common import (FORMATS, META, PRECISIONS, ArtefactError, RuntimeUnavailable, Timer,
                                   artefact_dir, export_program, load_source, read_meta, update_meta, write_meta)

__all__ = ["FORMATS", "PRECISIONS", "ArtefactError", "RuntimeUnavailable", "artefact_dir", "export_program",
           "load_source", "read_meta", "write_meta", "export_artefact", "verify_artefact", "TOLERANCE"]

log = logging.getLogger(__name__)

BUILDERS = {"onnx": "vitedge.export.onnx", "ort": "vitedge.export.ort_format",
            "executorch": "vitedge.export.executorch", "coreml": "vitedge.export.coreml",
            "tensorrt": "vitedge.export.tensorrt", "litert": "vitedge.export.litert"}
# max |logit - torch logit| an export may show on random inputs before it is rejected; int8 is
# judged by the quantiser's accuracy gate instead
TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}


def export_artefact(checkpoint: str | Path, root: str | Path, model_name: str, fmt: str, precision: str,
                    verify: bool = True, **opts: Any) -> dict[str, Any]:
    """Export `checkpoint` as `<root>/<model_name>/<fmt>-<precision>/`; returns its meta.json dict."""
    art = artefact_dir(root, model_name, fmt, precision)  # validates fmt and precision
    if fmt not in BUILDERS:
        raise ValueError(f"{fmt} artefacts are not exported from a checkpoint here (the quantiser writes them)")
    builder = importlib.import_module(BUILDERS[fmt])
    # refuse before anything on disk is touched: an existing artefact (e.g. the quantiser's) stays
    if precision not in builder.PRECISIONS:
        raise ValueError(f"{fmt}-{precision} is not exported from a checkpoint ({fmt}: {', '.join(builder.PRECISIONS)}); "
                         f"int8 {fmt} is made by `python -m vitedge.quantize` (calibration + accuracy gate)")
    getattr(builder, "check_host", lambda: None)()  # RuntimeUnavailable where the toolchain is missing
    model, info = load_source(checkpoint)
    art.mkdir(parents=True, exist_ok=True)
    # an old meta.json must not vouch for a half-replaced artefact
    (art / META).unlink(missing_ok=True)
    with Timer() as t:
        file_name, extras = builder.build(model, info, art, precision, **opts)
    meta = write_meta(art, fmt, precision, file_name, info, t.seconds, model_name=model_name, **extras)
    if verify:
        try:
            checks = verify_artefact(art, model, meta)
        except Exception:
            (art / META).unlink(missing_ok=True)  # a failed check leaves no complete-looking artefact
            raise
        meta = update_meta(art, verification=checks)
    return meta


def verify_artefact(art_dir: str | Path, model: Any, meta: dict[str, Any] | None = None,
                    batch: int = 5, seed: int = 1) -> dict[str, Any]:
    """Check an artefact against the PyTorch model it came from; raise ArtefactError if it is off.

    Runs the artefact through `vitedge.runtimes` on random inputs (odd batch size, to exercise
    the dynamic batch) when its runtime is available here; formats that cannot run here may
    provide their own static `verify`. Returns what was checked, for meta.json.
    """
    import numpy as np
    import torch

    from vitedge import runtimes
    from vitedge.export.common import example_input
    from vitedge.metrics import parity_metrics

    meta = meta or read_meta(art_dir)
    checks: dict[str, Any] = {}
    module = importlib.import_module(BUILDERS[meta["format"]]) if meta["format"] in BUILDERS else None
    if module is not None and hasattr(module, "verify"):
        checks.update(module.verify(Path(art_dir), meta, model))
    try:
        rt = runtimes.load(art_dir, runtime="auto", device="cpu")
    except RuntimeUnavailable as exc:
        checks["parity"] = {"skipped": str(exc)}
        return checks
    x = example_input(model, batch, seed)
    with torch.no_grad():
        ref = model(x)
        if meta.get("logits_normalised"):  # e.g. Core ML returns log-probabilities (same softmax)
            ref = torch.log_softmax(ref, dim=-1)
        ref = ref.numpy()
    parity = parity_metrics(rt.predict(x.numpy()), ref)
    parity.update(runtime=rt.name, batch=batch)
    checks["parity"] = parity
    tol = TOLERANCE.get(meta["precision"])
    if tol is not None and not (np.isfinite(parity["max_abs_delta"]) and parity["max_abs_delta"] <= tol):
        raise ArtefactError(f"{art_dir}: outputs differ from PyTorch by {parity['max_abs_delta']:.3g} "
                            f"(tolerance {tol} for {meta['precision']})")
    return checks
