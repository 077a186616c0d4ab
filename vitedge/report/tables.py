"""The report's rows and tables: validation results -> flat records -> table cells, Markdown and CSV.

Holds the reading of validation results (`load_results`, through `vitedge.validation_rows`), their
flattening into one scalar `Record` per row (`flatten`), the derived views (`compare_models`: teacher vs
student vs int8; `speedups`: per runtime), the column specs shared by the HTML and Markdown pages
(MATRIX, COMPARE, SPEEDUP: attributes of the records), the cell formatting, and the Markdown / CSV
writers. Nothing here draws or renders a page.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from vitedge.io import read_json
from vitedge.validation_rows import ValidationResult, ValidationRow, Verdict, is_validation

PRECISION_ORDER = {"fp32": 0, "bf16": 1, "fp16": 2, "int8": 3}
MODEL_ORDER = {"teacher": 0, "student": 1}

# columns shown left-aligned (text rather than numbers), in both the HTML and the Markdown tables
TEXT_COLS = {"model", "format", "precision", "target", "runtime", "status", "fastest as", "budgets", "machine",
             "split", "size stored", "size on disk"}

# (header, record attribute, format): the matrix table, in both HTML and Markdown
MATRIX = [
    ("model", "model", "str"), ("format", "format", "str"), ("precision", "precision", "str"),
    ("target", "target", "str"), ("runtime", "entry", "str"), ("status", "status", "str"),
    ("test top-1 %", "top1", "pct"), ("drop vs fp32 (pts)", "drop_points", "pts"), ("agreement %", "agreement", "pct"),
    ("max|Δ|", "max_abs_delta", "sci"), ("p50 ms bs1", "p50_ms", "ms"), ("p99 ms bs1", "p99_ms", "ms"),
    ("throughput img/s", "throughput_ips", "int"), ("peak mem MB", "memory_mb", "mb"), ("size MB", "size_mb", "mb"),
    ("budgets", "verdict", "str"), ("machine", "machine_id", "str"),
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

# a row's verdict against its budgets as the tables show it; "-": nothing was checked (skipped rows)
VERDICT_TEXT: dict[bool | None, str] = {True: "pass", False: "FAIL", None: "-"}
# record fields that are not scalars: kept for the plots and the verdicts, left out of CSV and JSON rows
NON_SCALAR = ("confusion", "failure_list")


@dataclass(frozen=True, kw_only=True)
class Record:
    """One row of the matrix, flat: its result's identity plus the row's headline measurements.

    Scalars only, so records go straight to metrics.csv (the field names are its header), except
    `confusion` (for the plots) and `failure_list` (the verdict's failures, one by one)."""

    model: str
    format: str
    precision: str
    artefact_precision: str
    target: str
    entry: str
    runtime: str
    runtime_version: str | None
    device: str
    threads: int | None
    threads_shown: int | str | None
    status: str
    reason: str
    top1: float | None
    macro_f1: float | None
    reference_top1: float | None
    drop_points: float | None
    agreement: float | None
    max_abs_delta: float | None
    mean_abs_delta: float | None
    kl: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    latency_n: int | None
    throughput_batch: int | None
    throughput_ips: float | None
    memory_mb: float | None
    size_mb: float | None
    load_s: float | None
    host_load: float | None
    cores: int | None
    verdict: str  # VERDICT_TEXT
    budget_failures: str
    stand_in: str
    machine_id: str
    machine: str
    file: str
    peer: bool  # a reference point (vitedge.benchmarks.peers), not a vitedge artefact
    confusion: list[list[int]] | None
    failure_list: list[str]  # reasons may contain "; " themselves


@dataclass(frozen=True, kw_only=True)
class Compared(Record):
    """A row of the teacher vs student vs int8 table: a record against its target's baseline."""

    speedup: float
    size_ratio: float | None
    baseline: str


@dataclass(frozen=True, kw_only=True)
class Speedup(Record):
    """A row of the speed-up table: ratios > 1 are faster than fp32 of the same runtime / torch eager fp32."""

    vs_fp32_bs1: float | None
    vs_fp32_batch: float | None
    vs_eager_bs1: float | None
    vs_eager_batch: float | None


# --------------------------------------------------------------------------- rows
def load_results(paths: Iterable[str | Path]) -> list[ValidationResult]:
    """Validation JSONs (files, or folders of them) -> list of results, each remembering its file.

    In a folder, other JSON files are passed over; a file named explicitly must be a validation result.
    Reading is strict: a result with a key the schema lacks is an error naming the file and the key."""
    results = []
    for p in paths:
        p = Path(p)
        for f in sorted(p.glob("*.json")) if p.is_dir() else [p]:
            d = read_json(f)
            if not is_validation(d) and p.is_dir():
                continue
            try:
                results.append(replace(ValidationResult.from_dict(d), source=f.name))
            except ValueError as exc:
                raise ValueError(f"{f}: {exc}") from None
    return results


def _threads_shown(threads: int | None, bs1_threads: int | None) -> int | str | None:
    """`2`, or `2 (bs1: 1)` where batch-1 calls ran on fewer threads (meta.json `bs1_threads`)."""
    return f"{threads} (bs1: {bs1_threads})" if bs1_threads and threads and bs1_threads != threads else threads


def _placeholder_row(result: ValidationResult) -> ValidationRow:
    """The single row of a result without rows (e.g. an artefact its target does not run)."""
    return ValidationRow(entry="-", runtime="-", device="", precision=result.precision,
                         artefact_precision=result.precision, status=result.status, reason=result.reason)


def _record(r: ValidationResult, row: ValidationRow, machine_id: str, line: str) -> Record:
    """One flat record: result `r`'s identity plus one of its rows' measurements.

    `x and x.attr` reads a measurement a skipped or failed row lacks as None (x is None then)."""
    best = max(row.throughput or [], key=lambda t: t.images_per_s, default=None)
    verdict = row.verdict or (Verdict.broken(row.reason) if row.status == "failed" else Verdict(None))
    acc, par, lat, info = row.accuracy, row.parity, row.latency_ms, row.runtime_info or {}
    return Record(
        model=r.model, format=r.format, precision=row.precision, artefact_precision=r.precision, target=r.target,
        entry=row.entry, runtime=row.runtime, runtime_version=info.get("version"), device=row.device,
        threads=row.threads,
        # batch-1 calls may run on fewer threads, the count the artefact was measured fastest with here
        threads_shown=_threads_shown(row.threads, info.get("bs1_threads")), status=row.status, reason=row.reason,
        top1=acc and acc.top1, macro_f1=acc and acc.macro_f1,
        reference_top1=row.reference_accuracy and row.reference_accuracy.top1, drop_points=row.drop_points,
        agreement=par and par.top1_agreement, max_abs_delta=par and par.max_abs_delta,
        mean_abs_delta=par and par.mean_abs_delta, kl=par and par.kl,
        p50_ms=lat and lat.p50, p90_ms=lat and lat.p90, p99_ms=lat and lat.p99, latency_n=lat and lat.n,
        throughput_batch=best and best.batch, throughput_ips=best and best.images_per_s,
        memory_mb=row.memory and row.memory.peak_delta_mb,
        size_mb=row.size_bytes / 1e6 if row.size_bytes else None, load_s=row.load_seconds,
        host_load=row.host_load and row.host_load.peak(), cores=((r.machine or {}).get("cpu") or {}).get("cores"),
        verdict=VERDICT_TEXT[verdict.passed], budget_failures="; ".join(verdict.failures),
        stand_in=row.stand_in, machine_id=machine_id, machine=line, file=r.source, peer=r.is_peer,
        confusion=acc and acc.confusion, failure_list=list(verdict.failures),
    )


def flatten(results: list[ValidationResult]) -> list[Record]:
    """One flat record per row (a result with no rows, e.g. an artefact its target does not run, gives one)."""
    machines: dict[str, str] = {}
    records = []
    for r in results:
        line = r.machine_line or "unknown machine"
        machine_id = machines.setdefault(line, f"M{len(machines) + 1}")
        for row in r.rows or [_placeholder_row(r)]:
            records.append(_record(r, row, machine_id, line))
    records.sort(key=lambda x: (x.target, MODEL_ORDER.get(x.model, 9), x.model, x.format,
                                PRECISION_ORDER.get(x.precision, 9), x.entry))
    return records


def scalar_fields(record: Record) -> dict[str, Any]:
    """The record without its non-scalar fields: what CSV and metrics.json carry."""
    return {k: v for k, v in vars(record).items() if k not in NON_SCALAR}


def busy(r: Record) -> bool:
    """Timed while the host's load average reached its core count: other work competed for the CPU."""
    return r.host_load is not None and bool(r.cores) and r.host_load >= r.cores


def row_label(r: Record) -> str:
    """'student onnx-int8 @ cpu [onnxruntime]': a row as people name it in verdict messages."""
    return f"{r.model} {r.format}-{r.artefact_precision} @ {r.target} [{r.entry}]"


def skipped_lines(records: list[Record]) -> list[str]:
    """The skipped rows, one line per (target, reason) instead of one per row: absent hardware skips many rows
    for one reason ('gpu rows: skipped, no CUDA GPU (...) (torch eager, torch eager fp16; 8 rows)')."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        if r.status == "skipped":
            groups.setdefault((r.target, r.reason or "no reason given"), []).append(r)
    lines = []
    for (target, reason), rows in groups.items():
        entries = ", ".join(dict.fromkeys(r.entry for r in rows if r.entry != "-")) or "no runtime"
        lines.append(f"{target} rows: skipped, {reason} ({entries}; {len(rows)} row{'s' * (len(rows) != 1)})")
    return lines


# --------------------------------------------------------------------------- derived views
def measured_rows(records: list[Record], target: str) -> list[Record]:
    """The rows of `target` that ran and have a batch-1 latency: the only ones a speed can be read from."""
    return [r for r in records if r.target == target and r.status == "ok" and r.p50_ms]


def fastest_per_group(rows: list[Record]) -> dict[tuple[str, str], Record]:
    """(model, precision) -> its lowest-latency row."""
    groups: dict[tuple[str, str], Record] = {}
    for r in sorted(rows, key=lambda r: r.p50_ms):
        groups.setdefault((r.model, r.precision), r)
    return groups


def compare_models(records: list[Record], peers: list[Record] | None = None) -> list[Compared]:
    """Per target, the fastest ok row of each (model, precision): teacher fp32 vs student fp32 vs student int8 ...

    Speed-up and size ratio are against the target's teacher fp32 (or its first group if it has no teacher).
    `peers` (records of vitedge.benchmarks.peers's results) follow each target's models as reference points,
    against the same baseline."""
    out = []
    for target in sorted({r.target for r in records}):
        groups = fastest_per_group(measured_rows(records, target))
        keys = sorted(groups, key=lambda k: (MODEL_ORDER.get(k[0], 9), k[0], PRECISION_ORDER.get(k[1], 9)))
        if not keys:
            continue
        base = groups.get(("teacher", "fp32"), groups[keys[0]])
        peer_groups = fastest_per_group(measured_rows(peers or [], target))
        for r in [groups[k] for k in keys] + [peer_groups[k] for k in sorted(peer_groups)]:
            out.append(Compared(**{**vars(r), "model": f"{r.model} (peer)" if r.peer else r.model},
                                speedup=base.p50_ms / r.p50_ms,
                                size_ratio=(r.size_mb / base.size_mb) if r.size_mb and base.size_mb else None,
                                baseline=f"{base.model} {base.precision}"))
    return out


def _ratio(row: Record, base: Record | None, faster: str) -> float | None:
    """How many times faster `row` is than `base`: on batch-1 latency ("bs1") or throughput ("batch")."""
    if faster == "bs1":
        return base.p50_ms / row.p50_ms if base and base.p50_ms and row.p50_ms else None
    return row.throughput_ips / base.throughput_ips if base and base.throughput_ips and row.throughput_ips else None


def speedups(records: list[Record]) -> list[Speedup]:
    """What a user gains, per target and runtime: every measured row against fp32 of the same model in the
    same runtime (entry), and against the same model's torch eager fp32 on that target; at batch 1
    (p50 latency) and at the throughput batch (images/s). Ratios > 1 mean faster."""
    out = []
    ok = [r for r in records if r.status == "ok" and r.p50_ms and not r.peer]
    index = {(r.target, r.model, r.entry, r.precision): r for r in ok}
    # a target without a torch eager row (mobile) is compared with the eager CPU row of the same thread count
    eager_cpu = {(r.model, r.threads): r for r in ok if r.entry == "torch eager" and r.precision == "fp32"
                 and r.device == "cpu"}
    for r in ok:
        same = index.get((r.target, r.model, r.entry, "fp32"))
        eager = index.get((r.target, r.model, "torch eager", "fp32")) or (
            eager_cpu.get((r.model, r.threads)) if r.device == "cpu" else None)
        out.append(Speedup(**vars(r), vs_fp32_bs1=_ratio(r, same, "bs1"), vs_fp32_batch=_ratio(r, same, "batch"),
                           vs_eager_bs1=_ratio(r, eager, "bs1"), vs_eager_batch=_ratio(r, eager, "batch")))
    return out


# --------------------------------------------------------------------------- cells
def format_value(v: Any, kind: str) -> str:
    """A value as a table shows it; `kind` is the third element of a column spec."""
    if v is None or v == "":
        return "–"
    if kind == "pct":
        return f"{100 * v:.2f}"
    if kind == "pts":  # already in points
        return f"{v:+.2f}"
    if kind == "ms":
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "sci":
        return f"{v:.2g}"
    if kind == "mb":
        return f"{v:.2f}"
    return str(v)


def _throughput_text(r: Record) -> str:
    return f"{format_value(r.throughput_ips, 'int')} (bs {r.throughput_batch})"


def _ratio_or_value(r: Record, attr: str, kind: str) -> str:
    v = getattr(r, attr)
    return f"{v:.2f}x" if kind == "x" and v else format_value(v, kind)


def matrix_cells(r: Record) -> list[str]:
    """One row of the validation matrix, with its marks: † host stand-in, ⚠ timed on a busy host."""
    cells = []
    for _, attr, kind in MATRIX:
        if attr == "status":
            cells.append(r.status if r.status == "ok" else f"{r.status}: {r.reason}")
        elif attr == "throughput_ips" and r.throughput_ips is not None:
            cells.append(_throughput_text(r))
        elif attr == "entry" and r.stand_in:
            cells.append(f"{r.entry} †")
        elif attr == "p50_ms" and r.p50_ms is not None and busy(r):
            cells.append(f"{format_value(r.p50_ms, kind)} ⚠")
        else:
            cells.append(format_value(getattr(r, attr), kind))
    return cells


def speedup_cells(r: Speedup) -> list[str]:
    """One row of the speed-up table (a row of `speedups`)."""
    return [_throughput_text(r) if attr == "throughput_ips" and r.throughput_ips is not None
            else _ratio_or_value(r, attr, kind) for _, attr, kind in SPEEDUP]


def compare_cells(r: Compared) -> list[str]:
    """One row of the teacher vs student vs int8 table (a row of `compare_models`)."""
    return [_ratio_or_value(r, attr, kind) for _, attr, kind in COMPARE]


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
