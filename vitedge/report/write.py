"""`write_report`: every file of the report in one folder (python -m vitedge.report write).

index.html, report.md, metrics.csv, metrics.json and the PNGs, all from the same flattened records
and summary, so the files never disagree.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from vitedge.io import atomic_write_bytes, atomic_write_text, write_json
from vitedge.report.html import render_html
from vitedge.report.markdown import render_markdown
from vitedge.report.plots import make_figures
from vitedge.report.summary import summarise
from vitedge.report.tables import Record, csv_text, flatten, scalar_fields
from vitedge.validation_rows import ValidationResult, to_dict


def _class_names(results: list[ValidationResult]) -> list[str]:
    """The class names, in order, from the first row with accuracy (the confusion plots' axes)."""
    return next((list(row.accuracy.per_class) for r in results for row in r.rows if row.accuracy), [])


def _write_figures(out_dir: Path, figures: list[tuple[str, str, bytes]]) -> None:
    for old in [*out_dir.glob("pareto-*.png"), *out_dir.glob("confusion-*.png")]:
        old.unlink()  # plots of rows no longer in the matrix must not linger beside the new report
    for _, name, png in figures:
        atomic_write_bytes(out_dir / name, png)


def _metrics(s: dict[str, Any], rows: list[dict[str, Any]], peer_records: list[Record],
             figures: list[tuple[str, str, bytes]], distill: dict[str, Any] | None,
             datacard: dict[str, Any] | None, peers: dict[str, Any] | None) -> dict[str, Any]:
    """metrics.json's content: the summary's facts and every record, for scripts and dashboards."""
    return {"generated": s["generated"], "summary": s["summary"], "counts": s["counts"],
            "verdict": {"passed": s["passed"], "failures": s["failures"], "budgets": to_dict(s["budgets"])},
            "machines": s["machines"], "rows": rows,
            # the comparison keeps failure_list (as it always did); only the confusion matrix is dropped
            "comparison": [{k: v for k, v in vars(r).items() if k != "confusion"} for r in s["compare_rows"]],
            "speedups": [scalar_fields(r) for r in s["speedup_rows"]],
            "peers": [scalar_fields(r) for r in peer_records],
            "peers_skipped": list((peers or {}).get("skipped", [])),
            "figures": [name for _, name, _ in figures], "distill": distill,
            "data_warnings": list((datacard or {}).get("warnings", []))}


def write_report(results: list[ValidationResult], out_dir: str | Path, distill: dict[str, Any] | None = None,
                 title: str = "vitedge validation report", datacard: dict[str, Any] | None = None,
                 peers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write index.html, report.md, metrics.csv, metrics.json and the PNGs; return metrics.json's content.

    `datacard` is vitedge.data's datacard.json content, shown in its own section when given.
    `peers` is vitedge.benchmarks.peers's peers.json content: reference points in the plots and the model
    table (never in the matrix or the verdict); its results are read as strictly as validation files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    peer_results = [ValidationResult.from_dict(r) for r in (peers or {}).get("results", [])]
    peer_results = [r if r.is_peer else replace(r, peer={}) for r in peer_results]  # a peer even if unlabelled
    flat = flatten(results + peer_results)  # one pass: peers share the machine ids
    records = [r for r in flat if not r.peer]
    peer_records = [r for r in flat if r.peer]
    s = summarise(results, records, peer_records, (peers or {}).get("skipped", []))
    figures = make_figures(records, _class_names(results), peer_records)
    _write_figures(out_dir, figures)
    atomic_write_text(out_dir / "index.html", render_html(title, s, figures, distill, datacard))
    atomic_write_text(out_dir / "report.md", render_markdown(title, s, figures, distill, datacard))
    rows = [scalar_fields(r) for r in records]
    atomic_write_text(out_dir / "metrics.csv", csv_text(rows))
    metrics = _metrics(s, rows, peer_records, figures, distill, datacard, peers)
    write_json(out_dir / "metrics.json", metrics)
    return metrics

