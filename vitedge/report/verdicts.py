"""The budgets as the report states them, and `python -m vitedge.report check`'s verdict.

Each row is held to its budgets by vitedge.validate (`Budgets.check`, vitedge.validation_rows); this
module only collects the rows over budget, describes the budgets in words and turns the verdict into
an exit status: the workflow's last rule, `check_budgets`, fails the run with it.
"""
from __future__ import annotations

import sys
from pathlib import Path

from vitedge.io import write_json
from vitedge.report.tables import Record, flatten, row_label
from vitedge.validation_rows import Budgets, Limits, ValidationResult


def budget_failures(records: list[Record]) -> list[str]:
    """'student onnx-int8 @ cpu [onnxruntime]: top-1 drop 3.10 pts > 2.00 allowed' for each failure."""
    return [f"{row_label(r)}: {f}" for r in records if r.verdict == "FAIL" for f in r.failure_list]


def overall_verdict(records: list[Record]) -> bool | None:
    """False if any row is over budget (or failed), True if at least one passed and none failed, None if
    none was checked."""
    verdicts = {r.verdict for r in records}
    return False if "FAIL" in verdicts else (True if "pass" in verdicts else None)


def describe_limits(limits: Limits) -> str:
    """'top-1 drop at most 2.00 points and agreement with the fp32 reference at least 95.00%', or 'none'."""
    parts = []
    if limits.max_drop_points is not None:
        parts.append(f"top-1 drop at most {limits.max_drop_points:.2f} points")
    if limits.min_agreement is not None:
        parts.append(f"agreement with the fp32 reference at least {100 * limits.min_agreement:.2f}%")
    return " and ".join(parts) or "none"


def describe_budgets(budgets: Budgets | None) -> str:
    """The default budgets, then each precision's that differ, in one sentence."""
    if budgets is None:
        return "none recorded"
    return describe_limits(Limits(budgets.max_drop_points, budgets.min_agreement)) + "".join(
        f"; {precision}: {describe_limits(budgets.for_precision(precision))}"
        for precision in (budgets.by_precision or {}))


def run_check(results: list[ValidationResult], report: str | None = None, out: Path | None = None) -> int:
    """The workflow's last step: 1 listing every row over budget on stderr (and where the report is), else 0.

    On success the verdict is also written to `out`, the file the workflow waits for."""
    records = flatten(results)
    failures = budget_failures(records)
    if failures:
        where = f"\nreport: {report}" if report else ""
        print(f"OVER BUDGET: {len(failures)} failure(s) in {sum(r.verdict != '-' for r in records)} checked rows\n  "
              + "\n  ".join(failures) + where, file=sys.stderr)
        return 1
    counts = {s: sum(r.status == s for r in records) for s in ("ok", "skipped")}
    msg = f"every row within budget: {counts['ok']} rows measured, {counts['skipped']} skipped"
    print(msg)
    if out:
        write_json(out, {"passed": True, "summary": msg, "rows": len(records)})
    return 0
