"""What the report pages say, independent of their format: verdicts, counts, notes and table cells.

`summarise` gathers everything the HTML and Markdown pages show except the plots, so both pages state
the same facts; `datacard_section` does the same for vitedge.data's data card. The explanatory notes
under the tables live here too, for the same reason.
"""
from __future__ import annotations

import time
from typing import Any

from vitedge.data.datacard import summary_table
from vitedge.report.tables import (COMPARE, MATRIX, SPEEDUP, Record, busy, compare_cells, compare_models,
                                   format_value, headers, matrix_cells, skipped_lines, speedup_cells, speedups)
from vitedge.report.verdicts import budget_failures, describe_budgets, overall_verdict
from vitedge.validation_rows import ValidationResult

SPEEDUP_NOTE = ("Each measured row against fp32 of the same model in the same runtime (what int8 buys there) and "
                "against the same model's torch eager fp32 on the same target, or on this CPU with the same threads "
                "for targets without an eager row (what leaving PyTorch buys), at batch 1 "
                "(p50 latency) and at the throughput batch (images/s); > 1x is faster. Threads: the target's "
                "budget; vitedge.benchmarks.compression adds 1 vs 2 threads.")
NOTES = ("Drop and agreement are against the PyTorch fp32 checkpoint of the same model on the same "
         "preprocessed test images. Latency: batch 1 after warm-up, p50/p99 over n timed calls (vitedge.bench); "
         "throughput: the best of the larger batches, images / p50 batch latency; peak mem: growth of the process "
         "while loading and benchmarking. † host stand-in: measured on this host with the target's thread budget, "
         "not on the device itself. Skipped rows are listed under the table, one line per reason; metrics.csv has "
         "each of them.")
DATACARD_NOTE = ("Sharpness: variance of the 3x3 Laplacian per image (blur drives it towards 0). The training split "
                 "is compared with val+test pooled; see data/datacard.md for classes, overlaps and examples.")


def _matrix_notes(records: list[Record]) -> str:
    """NOTES, plus a warning when rows were timed on a busy host (their latencies are upper bounds)."""
    n_busy = sum(busy(r) for r in records)
    if not n_busy:
        return NOTES
    return NOTES + (f" ⚠ {n_busy} row(s) were timed while the host's 1-minute load average was at or above its "
                    "core count: other processes competed for the CPU, so those latencies are upper bounds.")


def _summary_line(records: list[Record], counts: dict[str, int], passed: bool | None, n_failures: int) -> str:
    verdict = {True: "every row within budget", False: f"{n_failures} budget failure(s)",
               None: "no row checked against budgets"}[passed]
    return (f"{len(records)} rows: {counts['ok']} measured, {counts['skipped']} skipped, "
            f"{counts['failed']} failed — {verdict}")


def _unmeasured_targets(records: list[Record]) -> dict[str, list[str]]:
    """Targets with no measured row -> the distinct reasons why, so the plots section can say so."""
    measured = {r.target for r in records if r.status == "ok"}
    return {t: sorted({r.reason for r in records if r.target == t})
            for t in sorted({r.target for r in records}) if t not in measured}


def summarise(results: list[ValidationResult], records: list[Record], peers: list[Record] | None = None,
              peers_skipped: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything the pages show except the plots: verdicts, counts, texts and table cells.
    `peers`: flattened records of vitedge.benchmarks.peers's results; `peers_skipped`: its skipped list.

    The matrix shows the rows that ran or failed; skipped rows (absent hardware skips many for one
    reason) are `skipped`: one line per target and reason."""
    failures = budget_failures(records)
    passed = overall_verdict(records)
    counts = {s: sum(r.status == s for r in records) for s in ("ok", "skipped", "failed")}
    budgets = next((r.budgets for r in results if r.budgets), None)
    compare = compare_models(records, peers)
    speed = speedups(records)
    libs = next((r.machine.get("libraries") for r in results if isinstance(r.machine, dict)), None)
    shown = [r for r in records if r.status != "skipped"]
    return {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "passed": passed, "failures": failures, "counts": counts,
        "summary": _summary_line(records, counts, passed, len(failures)),
        "budgets": budgets, "budget_text": describe_budgets(budgets), "notes": _matrix_notes(records),
        "matrix": (headers(MATRIX), [matrix_cells(r) for r in shown], [r.status for r in shown]),
        "skipped": skipped_lines(records),
        "compare": (headers(COMPARE), [compare_cells(r) for r in compare]), "compare_rows": compare,
        "speedups": (headers(SPEEDUP), [speedup_cells(r) for r in speed]), "speedup_rows": speed,
        "peers": peers_text(peers or [], peers_skipped or []),
        "unmeasured": _unmeasured_targets(records),
        "machines": {r.machine_id: r.machine for r in records},
        "libraries": ", ".join(f"{k} {v}" for k, v in (libs or {}).items()),
    }


def peers_text(peers: list[Record], skipped: list[dict[str, Any]]) -> str:
    """One sentence on the peers: what was measured as a reference point, what could not be and why."""
    parts = [f"{r.model} ({r.format}-{r.precision}, {r.entry} @ {r.target}): "
             f"{format_value(r.top1, 'pct')}% at {format_value(r.p50_ms, 'ms')} ms"
             for r in peers if r.status == "ok"]
    parts += [f"{s.get('name', s.get('peer'))}: skipped: {s['reason']}" for s in skipped]
    if not parts:
        return ""
    return ("Peers (what users would deploy instead, measured in this run on the same test split and machine by "
            "vitedge.benchmarks.peers; stars in the plots): " + "; ".join(parts) + ".")


def datacard_section(card: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the pages show of vitedge.data's data card: its per-split table, warnings and source."""
    if not card:
        return None
    src = card.get("source") or {}
    return {"table": summary_table(card), "warnings": [f"{w['check']}: {w['message']}" for w in card["warnings"]],
            "source": " ".join(str(src[k]) for k in ("kind", "path") if src.get(k)) or "unknown source"}
