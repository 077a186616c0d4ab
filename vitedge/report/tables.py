"""The report's rows and tables: validation JSONs -> flat records -> table cells, Markdown and CSV.

Holds the reading of validation results (`load_results`), their flattening into one scalar record per
row (`flatten`), the derived views (`compare_models`: teacher vs student vs int8; `speedups`: per
runtime), the column specs shared by the HTML and Markdown pages (MATRIX, COMPARE, SPEEDUP), the cell
formatting, and the Markdown / CSV writers. Nothing here draws or renders a page.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterable

from vitedge.io import read_json

PRECISION_ORDER = {"fp32": 0, "bf16": 1, "fp16": 2, "int8": 3}
MODEL_ORDER = {"teacher": 0, "student": 1}

# columns shown left-aligned (text rather than numbers), in both the HTML and the Markdown tables
TEXT_COLS = {"model", "format", "precision", "target", "runtime", "status", "fastest as", "gate", "machine",
             "split", "size stored", "size on disk"}

# (header, record key, format): the matrix table, in both HTML and Markdown
MATRIX = [
    ("model", "model", "str"), ("format", "format", "str"), ("precision", "precision", "str"),
    ("target", "target", "str"), ("runtime", "entry", "str"), ("status", "status", "str"),
    ("test top-1 %", "top1", "pct"), ("drop vs fp32 (pts)", "drop", "pts"), ("agreement %", "agreement", "pct"),
    ("max|Δ|", "max_abs_delta", "sci"), ("p50 ms bs1", "p50_ms", "ms"), ("p99 ms bs1", "p99_ms", "ms"),
    ("throughput img/s", "throughput_ips", "int"), ("peak mem MB", "memory_mb", "mb"), ("size MB", "size_mb", "mb"),
    ("gate", "gate", "str"), ("machine", "machine_id", "str"),
]
SPEEDUP = [("target", "target", "str"), ("model", "model", "str"), ("format", "format", "str"),
           ("precision", "precision", "str"), ("runtime", "entry", "str"), ("threads", "threads_shown", "str"),
           ("p50 ms bs1", "p50_ms", "ms"), ("throughput img/s", "throughput_ips", "int"),
           ("×fp32 same runtime bs1", "vs_fp32_bs1", "x"), ("×fp32 same runtime batch", "vs_fp32_batch", "x"),
           ("×torch eager fp32 bs1", "vs_eager_bs1", "x"), ("×torch eager fp32 batch", "vs_eager_batch", "x")]
COMPARE = [("target", "target", "str"), ("model", "model", "str"), ("precision", "precision", "str"),
           ("fastest as", "format", "str"), ("runtime", "entry", "str"), ("test top-1 %", "top1", "pct"),
           ("macro-F1 %", "macro_f1", "pct"), ("p50 ms bs1", "p50_ms", "ms"), ("speed-up", "speedup", "x"),
           ("size MB", "size_mb", "mb"), ("size ratio", "size_ratio", "x")]

# a row's gate verdict as the tables show it; "-": no gate was evaluated (skipped rows)
GATE_TEXT: dict[bool | None, str] = {True: "pass", False: "FAIL", None: "-"}
# record fields that are not scalars: kept for the plots and the gate, left out of CSV and JSON rows
NON_SCALAR = ("confusion", "failure_list")


# --------------------------------------------------------------------------- rows
def load_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Validation JSONs (files, or folders of them) -> list of results, each remembering its file.

    In a folder, other JSON files are passed over; a file named explicitly must be a validation result."""
    results = []
    for p in paths:
        p = Path(p)
        for f in sorted(p.glob("*.json")) if p.is_dir() else [p]:
            r = read_json(f)
            if not (isinstance(r, dict) and str(r.get("schema", "")).startswith("vitedge-validation/")):
                if p.is_dir():
                    continue
                raise ValueError(f"{f} is not a vitedge validation result (python -m vitedge.validate writes those)")
            r["_file"] = f.name
            results.append(r)
    return results


def nested_get(d: dict | None, *keys: str) -> Any:
    """d[k1][k2]..., or None as soon as a level is missing or not a dict."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _threads_shown(threads: Any, bs1_threads: Any) -> Any:
    """`2`, or `2 (bs1: 1)` where batch-1 calls ran on fewer threads (meta.json `bs1_threads`)."""
    return f"{threads} (bs1: {bs1_threads})" if bs1_threads and threads and bs1_threads != threads else threads


def _placeholder_row(result: dict[str, Any]) -> dict[str, Any]:
    """The single row of a result without rows (e.g. an artefact its target does not run)."""
    return {"entry": "-", "runtime": "-", "precision": result["precision"], "status": result["status"],
            "reason": result.get("reason", "")}


def _record(r: dict[str, Any], row: dict[str, Any], machine_id: str, line: str) -> dict[str, Any]:
    """One flat record: result `r`'s identity plus one of its rows' measurements."""
    tput = row.get("throughput") or []
    best = max(tput, key=lambda t: t["images_per_s"]) if tput else {}
    gate = row.get("gate") or {}
    if row["status"] == "failed" and not gate:  # a broken artefact never passes
        gate = {"passed": False, "failures": [f"failed: {row.get('reason', '')}"]}
    return {
        "model": r["model"], "format": r["format"], "precision": row.get("precision", r["precision"]),
        "artefact_precision": r["precision"], "target": r["target"], "entry": row["entry"],
        "runtime": row.get("runtime"), "runtime_version": nested_get(row, "runtime_info", "version"),
        "device": row.get("device"), "threads": row.get("threads"),
        # batch-1 calls may run on fewer threads, the count the artefact was measured fastest with here
        "threads_shown": _threads_shown(row.get("threads"), nested_get(row, "runtime_info", "bs1_threads")),
        "status": row["status"], "reason": row.get("reason", ""),
        "top1": nested_get(row, "accuracy", "top1"), "macro_f1": nested_get(row, "accuracy", "macro_f1"),
        "reference_top1": nested_get(row, "reference_accuracy", "top1"), "drop": row.get("accuracy_drop"),
        "agreement": nested_get(row, "parity", "top1_agreement"),
        "max_abs_delta": nested_get(row, "parity", "max_abs_delta"),
        "mean_abs_delta": nested_get(row, "parity", "mean_abs_delta"), "kl": nested_get(row, "parity", "kl"),
        "p50_ms": nested_get(row, "latency_ms", "p50"), "p90_ms": nested_get(row, "latency_ms", "p90"),
        "p99_ms": nested_get(row, "latency_ms", "p99"), "latency_n": nested_get(row, "latency_ms", "n"),
        "throughput_batch": best.get("batch"), "throughput_ips": best.get("images_per_s"),
        "memory_mb": nested_get(row, "memory", "peak_delta_mb"),
        "size_mb": row["size_bytes"] / 1e6 if row.get("size_bytes") else None,
        "load_s": row.get("load_seconds"),
        "host_load": max((v for v in (row.get("host_load") or {}).values() if v is not None), default=None),
        "cores": nested_get(r, "machine", "cpu", "cores"),
        "gate": GATE_TEXT.get(gate.get("passed"), "-"),
        "gate_failures": "; ".join(gate.get("failures", [])),
        "stand_in": row.get("stand_in", ""), "machine_id": machine_id, "machine": line, "file": r.get("_file", ""),
        "peer": bool(r.get("peer")),  # a reference point (benchmarks/peers.py), not a vitedge artefact
        "confusion": nested_get(row, "accuracy", "confusion"),
        "failure_list": list(gate.get("failures", [])),  # reasons may contain "; " themselves
    }


def flatten(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per row (a result with no rows, e.g. an artefact its target does not run, gives one).

    Records carry only scalars, so they go straight to CSV; `confusion` (for the plots) and
    `failure_list` (the gate failures, one by one) are left out of it.
    """
    machines: dict[str, str] = {}
    records = []
    for r in results:
        line = r.get("machine_line") or "unknown machine"
        machine_id = machines.setdefault(line, f"M{len(machines) + 1}")
        for row in r.get("rows") or [_placeholder_row(r)]:
            records.append(_record(r, row, machine_id, line))
    records.sort(key=lambda x: (x["target"], MODEL_ORDER.get(x["model"], 9), x["model"], x["format"],
                                PRECISION_ORDER.get(x["precision"], 9), x["entry"]))
    return records


def scalar_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The record without its non-scalar fields: what CSV and metrics.json carry."""
    return {k: v for k, v in record.items() if k not in NON_SCALAR}


def busy(r: dict[str, Any]) -> bool:
    """Timed while the host's load average reached its core count: other work competed for the CPU."""
    return r.get("host_load") is not None and bool(r.get("cores")) and r["host_load"] >= r["cores"]


def row_label(r: dict[str, Any]) -> str:
    """'student onnx-int8 @ cpu [onnxruntime]': a row as people name it in gate messages."""
    return f"{r['model']} {r['format']}-{r['artefact_precision']} @ {r['target']} [{r['entry']}]"


# --------------------------------------------------------------------------- derived views
def measured_rows(records: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    """The rows of `target` that ran and have a batch-1 latency: the only ones a speed can be read from."""
    return [r for r in records if r["target"] == target and r["status"] == "ok" and r["p50_ms"]]


def fastest_per_group(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(model, precision) -> its lowest-latency row."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: r["p50_ms"]):
        groups.setdefault((r["model"], r["precision"]), r)
    return groups


def compare_models(records: list[dict[str, Any]], peers: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per target, the fastest ok row of each (model, precision): teacher fp32 vs student fp32 vs student int8 ...

    Speed-up and size ratio are against the target's teacher fp32 (or its first group if it has no teacher).
    `peers` (records of benchmarks/peers.py's results) follow each target's models as reference points,
    against the same baseline."""
    out = []
    for target in sorted({r["target"] for r in records}):
        groups = fastest_per_group(measured_rows(records, target))
        keys = sorted(groups, key=lambda k: (MODEL_ORDER.get(k[0], 9), k[0], PRECISION_ORDER.get(k[1], 9)))
        if not keys:
            continue
        base = groups.get(("teacher", "fp32"), groups[keys[0]])
        peer_groups = fastest_per_group(measured_rows(peers or [], target))
        for r in [groups[k] for k in keys] + [peer_groups[k] for k in sorted(peer_groups)]:
            out.append({**r, "speedup": base["p50_ms"] / r["p50_ms"],
                        "size_ratio": (r["size_mb"] / base["size_mb"]) if r["size_mb"] and base["size_mb"] else None,
                        "baseline": f"{base['model']} {base['precision']}",
                        "model": f"{r['model']} (peer)" if r.get("peer") else r["model"]})
    return out


def _ratio(row: dict[str, Any], base: dict[str, Any] | None, key: str, inverse: bool) -> float | None:
    """How many times faster `row` is than `base` on `key` (a latency when `inverse`, else a rate)."""
    if not base or not base.get(key) or not row.get(key):
        return None
    return base[key] / row[key] if inverse else row[key] / base[key]


def speedups(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a user gains, per target and runtime: every measured row against fp32 of the same model in the
    same runtime (entry), and against the same model's torch eager fp32 on that target; at batch 1
    (p50 latency) and at the throughput batch (images/s). Ratios > 1 mean faster."""
    out = []
    ok = [r for r in records if r["status"] == "ok" and r["p50_ms"] and not r.get("peer")]
    index = {(r["target"], r["model"], r["entry"], r["precision"]): r for r in ok}
    # a target without a torch eager row (mobile) is compared with the eager CPU row of the same thread count
    eager_cpu = {(r["model"], r["threads"]): r for r in ok if r["entry"] == "torch eager" and r["precision"] == "fp32"
                 and r["device"] == "cpu"}
    for r in ok:
        same = index.get((r["target"], r["model"], r["entry"], "fp32"))
        eager = index.get((r["target"], r["model"], "torch eager", "fp32")) or (
            eager_cpu.get((r["model"], r["threads"])) if r["device"] == "cpu" else None)
        out.append({**r, "vs_fp32_bs1": _ratio(r, same, "p50_ms", True),
                    "vs_fp32_batch": _ratio(r, same, "throughput_ips", False),
                    "vs_eager_bs1": _ratio(r, eager, "p50_ms", True),
                    "vs_eager_batch": _ratio(r, eager, "throughput_ips", False)})
    return out


# --------------------------------------------------------------------------- cells
def format_value(v: Any, kind: str) -> str:
    """A value as a table shows it; `kind` is the third element of a column spec."""
    if v is None or v == "":
        return "–"
    if kind == "pct":
        return f"{100 * v:.2f}"
    if kind == "pts":
        return f"{100 * v:+.2f}"
    if kind == "ms":
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "sci":
        return f"{v:.2g}"
    if kind == "mb":
        return f"{v:.2f}"
    return str(v)


def _throughput_text(r: dict[str, Any]) -> str:
    return f"{format_value(r['throughput_ips'], 'int')} (bs {r['throughput_batch']})"


def _ratio_or_value(r: dict[str, Any], key: str, kind: str) -> str:
    return f"{r[key]:.2f}x" if kind == "x" and r.get(key) else format_value(r.get(key), kind)


def matrix_cells(r: dict[str, Any]) -> list[str]:
    """One row of the validation matrix, with its marks: † host stand-in, ⚠ timed on a busy host."""
    cells = []
    for _, key, kind in MATRIX:
        if key == "status":
            cells.append(r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}")
        elif key == "throughput_ips" and r.get("throughput_ips") is not None:
            cells.append(_throughput_text(r))
        elif key == "entry" and r.get("stand_in"):
            cells.append(f"{r['entry']} †")
        elif key == "p50_ms" and r.get("p50_ms") is not None and busy(r):
            cells.append(f"{format_value(r['p50_ms'], kind)} ⚠")
        else:
            cells.append(format_value(r.get(key), kind))
    return cells


def speedup_cells(r: dict[str, Any]) -> list[str]:
    """One row of the speed-up table (a row of `speedups`)."""
    return [_throughput_text(r) if key == "throughput_ips" and r.get(key) is not None
            else _ratio_or_value(r, key, kind) for _, key, kind in SPEEDUP]


def compare_cells(r: dict[str, Any]) -> list[str]:
    """One row of the teacher vs student vs int8 table (a row of `compare_models`)."""
    return [_ratio_or_value(r, key, kind) for _, key, kind in COMPARE]


def headers(columns: list[tuple[str, str, str]]) -> list[str]:
    return [h for h, _, _ in columns]


def distill_table(distill: dict[str, Any]) -> tuple[list[str], list[list[str]], str]:
    """(headers, rows, caption) from vitedge.distill's report JSON; tolerant of missing fields."""
    cols = [("params", "params", lambda v: f"{v / 1e6:.2f}M"), ("MFLOPs", "flops", lambda v: f"{v / 1e6:.1f}"),
            ("CPU bs1 ms", "latency_ms_bs1", lambda v: f"{v:.2f}"),
            ("val top-1 %", "val_top1", lambda v: f"{100 * v:.2f}"),
            ("test top-1 %", "test_top1", lambda v: f"{100 * v:.2f}"),
            ("test macro-F1 %", "test_macro_f1", lambda v: f"{100 * v:.2f}")]
    rows = [[name] + [f(m[k]) if isinstance(m.get(k), (int, float)) else "–" for _, k, f in cols]
            for name, m in (distill.get("models") or {}).items()]
    d = distill.get("distillation") or {}
    caption = ", ".join(f"{k} {v}" for k, v in d.items())
    return ["model"] + [c[0] for c in cols], rows, caption


# --------------------------------------------------------------------------- Markdown / CSV
def _markdown_cell(c: str) -> str:
    # a "|" inside a cell would end it, a newline would end the table
    return c.replace("|", "\\|").replace("\n", " ")


def markdown_table(header_row: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table; text columns left-aligned, numbers right-aligned."""
    lines = ["| " + " | ".join(_markdown_cell(h) for h in header_row) + " |",
             "|" + "|".join("---" if h in TEXT_COLS else "---:" for h in header_row) + "|"]
    lines += ["| " + " | ".join(_markdown_cell(c) for c in cells) + " |" for cells in rows]
    return "\n".join(lines)


def csv_text(rows: list[dict[str, Any]]) -> str:
    """metrics.csv: one line per record, its keys as the header (just "model" when there are none)."""
    with io.StringIO() as buf:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["model"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
