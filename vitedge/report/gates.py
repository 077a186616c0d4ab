"""The accuracy gates as the report states them, and `python -m vitedge.report gate`'s verdict.

The gates themselves are evaluated by vitedge.validate, row by row; this module only collects the
failures, describes the thresholds in words and turns the verdict into an exit status.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from vitedge.io import write_json
from vitedge.report.tables import flatten, row_label


def gate_failures(records: list[dict[str, Any]]) -> list[str]:
    """'student onnx-int8 @ cpu [onnxruntime]: top-1 drop 3.10 pts > 2.00 allowed' for each failure."""
    return [f"{row_label(r)}: {f}" for r in records if r["gate"] == "FAIL" for f in r["failure_list"]]


def overall_verdict(records: list[dict[str, Any]]) -> bool | None:
    """False if any row failed a gate, True if at least one passed and none failed, None if none was gated."""
    verdicts = {r["gate"] for r in records}
    return False if "FAIL" in verdicts else (True if "pass" in verdicts else None)


def describe_gate(gate: dict[str, Any]) -> str:
    """'top-1 drop at most 2.00 points and agreement with the fp32 reference at least 95.00%', or 'none'."""
    parts = []
    if gate.get("max_accuracy_drop") is not None:
        parts.append(f"top-1 drop at most {100 * gate['max_accuracy_drop']:.2f} points")
    if gate.get("min_agreement") is not None:
        parts.append(f"agreement with the fp32 reference at least {100 * gate['min_agreement']:.2f}%")
    return " and ".join(parts) or "none"


def describe_gates(gates: dict[str, Any]) -> str:
    """The default gate, then each per-precision override, in one sentence."""
    return describe_gate(gates) + "".join(f"; {precision}: {describe_gate(g)}"
                                          for precision, g in (gates.get("by_precision") or {}).items())


def run_gate(results: list[dict[str, Any]], report: str | None = None, out: Path | None = None) -> int:
    """The workflow's last step: 1 listing every failure on stderr (and where the report is), else 0.

    On success the verdict is also written to `out`, the file the workflow waits for."""
    records = flatten(results)
    failures = gate_failures(records)
    if failures:
        where = f"\nreport: {report}" if report else ""
        print(f"GATE FAILED: {len(failures)} of {sum(r['gate'] != '-' for r in records)} gated rows\n  "
              + "\n  ".join(failures) + where, file=sys.stderr)
        return 1
    counts = {s: sum(r["status"] == s for r in records) for s in ("ok", "skipped")}
    msg = f"gates passed: {counts['ok']} rows measured, {counts['skipped']} skipped"
    print(msg)
    if out:
        write_json(out, {"passed": True, "summary": msg, "rows": len(records)})
    return 0
