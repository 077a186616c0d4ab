"""Deployment artefacts: one checkpoint -> each format of `vitedge.artefact.FORMAT_TABLE` with an exporter.

    meta = export_artefact("results/default/models/student.pt", "results/default/artefacts",
                           model_name="student", fmt="onnx", precision="fp32")

The table names each format's module (`exporter`) and the precisions it builds (`export_precisions`).
A format module exposes `build(model, info, art_dir, precision, **opts) -> (file_name, meta_extras)`
and, optionally, `check_host()` (RuntimeUnavailable where its toolchain is missing). A static check
for hosts that cannot run the artefact is the table's `static_verify` (used by `vitedge.verify`).
ONNX, LiteRT and TensorRT (through ONNX) start from the `torch.export` program of
`common.export_program`; Core ML converts a traced module and ExecuTorch lowers its own program.
Every artefact is written atomically and gets the same `meta.json` (`vitedge.artefact.write_meta`).

This package only builds: checking an artefact against PyTorch needs the runtimes, so it lives
above both, in `vitedge.verify` (`export_verified` = export + check).

Format modules are imported on use (`builder`) so `import vitedge.export` loads none of the
optional toolchains.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from vitedge.artefact import FORMAT_TABLE, META, artefact_dir, format_spec, load_object, write_meta
from vitedge.bench import Stopwatch
from vitedge.export.common import load_source

__all__ = ["export_artefact", "builder", "BUILDERS"]

# format -> its exporter module, as the table held it at import (a reader's view; `builder` reads the table)
BUILDERS = {f: spec.exporter for f, spec in FORMAT_TABLE.items() if spec.exporter}


def builder(fmt: str) -> ModuleType:
    """The format module that builds `fmt` artefacts from a checkpoint."""
    spec = format_spec(fmt)
    if spec.exporter is None:
        raise ValueError(f"{fmt} artefacts are not exported from a checkpoint here (the quantiser writes them)")
    return load_object(spec.exporter)


def export_artefact(checkpoint: str | Path, root: str | Path, model_name: str, fmt: str, precision: str,
                    source: tuple[Any, dict[str, Any]] | None = None, **opts: Any) -> dict[str, Any]:
    """Build `checkpoint` as `<root>/<model_name>/<fmt>-<precision>/`; returns its meta.json dict.
    `source`: `load_source(checkpoint)` when the caller already has it (it keeps the model to check)."""
    art = artefact_dir(root, model_name, fmt, precision)  # validates fmt and precision
    module, exported = builder(fmt), format_spec(fmt).export_precisions
    # refuse before anything on disk is touched: an existing artefact (e.g. the quantiser's) stays
    if precision not in exported:
        raise ValueError(f"{fmt}-{precision} is not exported from a checkpoint ({fmt}: {', '.join(exported)}); "
                         f"int8 {fmt} is made by `python -m vitedge.quantize` (calibration + accuracy gate)")
    getattr(module, "check_host", lambda: None)()  # RuntimeUnavailable where the toolchain is missing
    model, info = source or load_source(checkpoint)
    art.mkdir(parents=True, exist_ok=True)
    # an old meta.json must not vouch for a half-replaced artefact
    (art / META).unlink(missing_ok=True)
    with Stopwatch() as t:
        file_name, extras = module.build(model, info, art, precision, **opts)
    return write_meta(art, fmt, precision, file_name, info, t.seconds, model_name=model_name, **extras)
