"""Validate one artefact on one deployment target: accuracy, parity with PyTorch fp32, latency, memory.

    python -m vitedge.validate --artefact results/default/artefacts/student/onnx-int8 \
        --reference results/default/models/student.pt --target runtimes/cpu.yaml \
        --data results/default/data --out results/default/validation/student-onnx-int8@cpu.json

For every entry of the target that runs this artefact (runtimes/<target>.yaml), one row:

- accuracy on the test split (top-1, macro-F1, per class, confusion matrix);
- parity with the PyTorch fp32 reference checkpoint of the same model, on the *same*
  preprocessed inputs (the artefact's recorded preprocessing): top-1 agreement, max/mean
  |delta logit|, KL(reference || artefact), and the top-1 drop against the reference;
- latency at batch 1 (p50/p90/p99) and throughput at larger batches with the protocol of
  `vitedge.bench`, peak memory while loading and benchmarking, artefact size, load time;
- where and how it was measured: `sysinfo.machine_info()`, threads, runtime version, and the
  host's load average around the timing (latencies from a busy host are noise; the report says so);
- a verdict against the budgets (`Budgets`: max top-1 drop in points, min agreement; per
  precision if configured).

Rows and the file are `vitedge.validation_rows` dataclasses (`ValidationRow`, `ValidationResult`):
that module is the JSON contract the report and the benchmarks read.

Rows never raise: a requirement the host lacks, or `RuntimeUnavailable`, gives
`status: skipped` with the reason; anything else going wrong gives `status: failed`. The
file-level `status` is failed if any row failed, ok if any ran, else skipped.

Exit status: 0 when the JSON is written and no row is over budget, 1 when it is written but
a row failed or is over a budget, 2 when it cannot be written (bad arguments, no data).
`--exit-zero` makes 1 into 0: the workflow records verdicts per job and fails at the end
(rule `check_budgets`), after the report, instead of stopping at the first bad artefact.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitedge import runtimes, sysinfo
from vitedge.artefact import artefact_key
from vitedge.batching import map_batches
from vitedge.bench import BenchConfig, PeakMemory, available_cores, benchmark, cuda_event_timer
from vitedge.configs import decode
from vitedge.data import Split, load_splits
from vitedge.io import read_json, sha256_file, write_json
from vitedge.metrics import classification_metrics, parity_metrics
from vitedge.preprocess import Preprocess
from vitedge.targets import Entry, Target, load_target, unmet
from vitedge.validation_rows import (Accuracy, Budgets, DataRef, HostLoad, Latency, Memory, Parity, ReferenceAccuracy,
                                     Throughput, ValidationResult, ValidationRow, Verdict, to_dict)

log = logging.getLogger("vitedge.validate")
EVAL_BATCH = 128
BENCH_INPUTS = 64  # distinct real faces cycled through by the benchmark


# --------------------------------------------------------------------------- inputs
def load_test(data_dir: str | Path, limit: int | None = None) -> tuple[Split, DataRef]:
    """The test split (and its manifest entry, for provenance), optionally its first `limit` images."""
    test = load_splits(data_dir, names=("test",))["test"]
    if limit:
        test = test.subset(np.arange(min(limit, len(test))))
    entry = read_json(Path(data_dir) / "manifest.json")["splits"]["test"]
    return test, DataRef(dir=str(data_dir), n=len(test), sha256=entry.get("sha256", ""), limit=limit)


def predict_all(rt: runtimes.Runtime, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    return map_batches(rt.predict, x, batch)


def _load_runtime(path: str | Path, entry: Entry, threads: int | None) -> runtimes.Runtime:
    """The entry's runtime; an option its backend does not take (torch's dtype on ONNX Runtime) is
    RuntimeUnavailable, i.e. a skipped row that says so."""
    return runtimes.load(path, runtime=entry.runtime, device=entry.device, threads=threads, **entry.options)


# --------------------------------------------------------------------------- one row
def _result_head(target: Target, model: str, fmt: str, precision: str, artefact: str | None) -> ValidationResult:
    return ValidationResult(model=model, format=fmt, precision=precision, target=target.name,
                            target_description=target.description, target_file=str(target.path), artefact=artefact)


def _stamp(result: ValidationResult) -> None:
    """Where and when a result was made."""
    result.machine = sysinfo.machine_info()
    result.machine_line = sysinfo.describe(result.machine)
    result.created = time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _row_base(target: Target, entry: Entry, precision: str) -> ValidationRow:
    return ValidationRow(entry=entry.name, runtime=entry.runtime, device=entry.device,
                         threads=target.threads_for(entry), options=to_dict(dict(entry.options)),
                         precision=entry.precision_override or precision, artefact_precision=precision,
                         stand_in=target.stand_in() if entry.device == "cpu" else "")


def measure_entry(artefact: Path, entry: Entry, row: ValidationRow, x: np.ndarray,
                  bench: BenchConfig) -> np.ndarray | None:
    """Load and benchmark one entry, then predict the whole test set; fill `row`'s measurements in place.

    Returns the logits, or None (row skipped) when the runtime is unavailable here. Memory is
    measured around loading and benchmarking only, before the reference model is in the process.
    """
    timer = cuda_event_timer() if entry.device.startswith("cuda") else None
    load_before = _load_average()
    try:
        t0 = time.perf_counter()
        with PeakMemory(entry.device) as mem:
            rt = _load_runtime(artefact, entry, row.threads)
            load_s = time.perf_counter() - t0
            perf = benchmark(rt.predict, x[:BENCH_INPUTS], bench, timer=timer)
    except runtimes.RuntimeUnavailable as exc:
        row.reason = str(exc)
        return None
    row.host_load = HostLoad(before=load_before, after=_load_average())
    logits = predict_all(rt, x)
    row.status, row.runtime_info = "ok", to_dict(rt.info())  # JSON-shaped (tuples as lists), as read back
    row.size_bytes, row.load_seconds = int(rt.meta.get("size_bytes", 0)), round(load_s, 4)
    row.latency_ms, row.protocol = decode(Latency, perf["latency_ms"]), perf["protocol"]
    row.throughput = [decode(Throughput, t) for t in perf["throughput"]]
    row.memory = decode(Memory, mem.result)
    del rt
    gc.collect()  # the next entry's memory is measured from here
    return logits


def score_row(row: ValidationRow, logits: np.ndarray, labels: np.ndarray, classes: list[str], ref_logits: np.ndarray,
              ref_metrics: dict[str, Any], budgets: Budgets) -> None:
    """Accuracy, parity with the reference, and the verdict against the budgets of a measured row."""
    row.accuracy = decode(Accuracy, classification_metrics(logits, labels, classes))
    row.reference_accuracy = ReferenceAccuracy(top1=ref_metrics["top1"], macro_f1=ref_metrics["macro_f1"])
    row.drop_points = 100 * (ref_metrics["top1"] - row.accuracy.top1)
    row.parity = decode(Parity, parity_metrics(logits, ref_logits))
    row.verdict = budgets.check(row)


def _load_average() -> float | None:
    """1-minute load average: a busy host makes latencies meaningless, so every row records it."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # Windows
        return None


# --------------------------------------------------------------------------- one artefact x target
def validate(artefact: str | Path, reference: str | Path | Reference, target: str | Path | Target, data: str | Path,
             bench: dict[str, Any] | None = None, budgets: Budgets | dict | None = None,
             limit: int | None = None) -> ValidationResult:
    """Validate `artefact` on `target` against the fp32 `reference` checkpoint.

    `reference` may also be a `Reference` (a model that is not a vitedge checkpoint, e.g. a peer's
    PyTorch port: `vitedge.peers`)."""
    t_start = time.perf_counter()
    target = target if isinstance(target, Target) else load_target(target)
    budgets = budgets if isinstance(budgets, Budgets) else Budgets.from_dict(budgets)
    bench_cfg = target.bench.merged(bench)
    artefact = Path(artefact)
    _, meta = runtimes.describe(artefact)  # ArtefactError propagates: there is nothing to validate
    fmt, precision = artefact_key(meta["format"], meta["precision"]).split("-")
    result = _result_head(target, meta.get("model_name") or artefact.stem, fmt, precision, str(artefact))
    result.reference, result.budgets = str(reference), budgets
    entries = target.entries_for(fmt, precision)
    result.rows = [_row_base(target, e, precision) for e in entries]
    for e, row in zip(entries, result.rows):
        row.reason = unmet({**target.requires, **e.requires}) or ""
    runnable = [(e, r) for e, r in zip(entries, result.rows) if not r.reason]
    if not entries:
        result.reason = (f"target {target.name} runs none of its entries on {fmt}-{precision} artefacts "
                         f"({target.path} lists {', '.join(target.artefacts())})")
    if runnable:
        # the artefact's own recorded preprocessing makes the inputs; the reference gets the very same
        test, result.data = load_test(data, limit)
        pre = Preprocess.from_dict(meta["preprocess"])
        x, classes = pre(test.images), list(meta["classes"])
        measured = _measure_entries(artefact, target, runnable, x, bench_cfg)
        if measured:
            _score_against_reference(result, measured, reference, x, pre, classes, test.labels, budgets)
    for row in result.rows:
        if row.status == "failed":
            row.verdict = Verdict.broken(row.reason)
    _summarise(result)
    _stamp(result)
    result.seconds = round(time.perf_counter() - t_start, 2)
    return result


def _measure_entries(artefact: Path, target: Target, runnable: list[tuple[Entry, ValidationRow]], x: np.ndarray,
                     bench: BenchConfig) -> list[tuple[ValidationRow, np.ndarray]]:
    """(row, logits) of every entry that ran; a failing entry is a failed row, not an exception."""
    measured = []
    for e, row in runnable:
        try:
            logits = measure_entry(artefact, e, row, x, bench)
            if logits is not None:
                measured.append((row, logits))
        except Exception as exc:  # noqa: BLE001 - a broken artefact is a result, not a crash
            log.error("%s on %s (%s) failed:\n%s", artefact, target.name, e.name, traceback.format_exc())
            row.status, row.reason = "failed", f"{type(exc).__name__}: {exc}"
    return measured


def _score_against_reference(result: ValidationResult, measured: list[tuple[ValidationRow, np.ndarray]],
                             reference: str | Path | Reference, x: np.ndarray, pre: Preprocess, classes: list[str],
                             labels: np.ndarray, budgets: Budgets) -> None:
    """The reference's logits on the very inputs `x` the artefact got; each measured row scored against them."""
    if isinstance(reference, Reference):
        ref_logits, ref_pre, ref_classes = reference.predict(x), reference.preprocess, list(reference.classes)
    else:
        ref_logits, ref_pre, ref_classes = reference_logits(reference, x)
    if ref_classes != classes:
        raise ValueError(f"reference classes {ref_classes} differ from the artefact's {classes}")
    if ref_pre != pre:
        result.reference_note = (f"the artefact's preprocessing {pre} differs from the reference's "
                                 f"{ref_pre}; both were fed the artefact's")
    result.reference_sha256 = reference.sha256 if isinstance(reference, Reference) else sha256_file(reference)
    ref_metrics = classification_metrics(ref_logits, labels, classes)
    for row, logits in measured:
        score_row(row, logits, labels, classes, ref_logits, ref_metrics, budgets)


def unbuilt(model: str, fmt: str, precision: str, target: str | Path | Target, reason: str) -> ValidationResult:
    """The result for an artefact this host could not build (e.g. TensorRT without TensorRT or a GPU):
    one "skipped: <reason>" row per entry of the target that would have run it, so the matrix shows it."""
    target = target if isinstance(target, Target) else load_target(target)
    result = _result_head(target, model, fmt, precision, None)
    result.rows = [_row_base(target, e, precision) for e in target.entries_for(fmt, precision)]
    for row in result.rows:
        row.reason = f"not built: {reason}"
    result.reason = f"not built: {reason}"
    _summarise(result)
    _stamp(result)
    return result


@dataclass(frozen=True)
class Reference:
    """An fp32 reference that is not a vitedge checkpoint: `predict` maps the artefact's preprocessed
    inputs to logits (in `classes` order). `str()` names it in the result."""

    name: str
    predict: Any  # Callable[[np.ndarray], np.ndarray]
    preprocess: Preprocess
    classes: tuple[str, ...]
    sha256: str = ""

    def __str__(self) -> str:
        return self.name


def reference_logits(reference: str | Path, x: np.ndarray) -> tuple[np.ndarray, Preprocess, list[str]]:
    """The PyTorch fp32 checkpoint's logits on `x`, on the CPU (the reference must not depend on the
    target), with its recorded preprocessing and classes for the caller to check.

    Threads are set to the cores this process may use: under Snakemake, OMP_NUM_THREADS is the
    rule's `threads`, which can exceed the machine's cores (`--cores 8` on a 2-core laptop)."""
    ref = runtimes.load(reference, runtime="torch", device="cpu", threads=available_cores())
    return predict_all(ref, x), ref.preprocess, list(ref.classes)


def _summarise(result: ValidationResult) -> None:
    """The file's status (failed > ok > skipped), its reason when not ok, and the verdict over its rows."""
    rows = result.rows
    statuses = {r.status for r in rows}
    result.status = "failed" if "failed" in statuses else "ok" if "ok" in statuses else "skipped"
    if result.status != "ok" and not result.reason:
        result.reason = "; ".join(dict.fromkeys(f"{r.entry}: {r.reason}" for r in rows if r.status == result.status))
    verdicts = [r.verdict for r in rows if r.verdict is not None]
    result.verdict = Verdict(passed=all(v.passed for v in verdicts) if verdicts else None,
                             failures=[f"{r.entry}: {f}" for r in rows if r.verdict for f in r.verdict.failures])


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vitedge.validate", description=__doc__.splitlines()[0])
    p.add_argument("--artefact", required=True, type=Path,
                   help="artefact dir / meta.json / model file, or a .pt checkpoint")
    p.add_argument("--reference", required=True, type=Path,
                   help="the model's PyTorch fp32 checkpoint (models/<model>.pt)")
    p.add_argument("--target", required=True, help="runtimes/<target>.yaml, or a target name")
    p.add_argument("--data", required=True, type=Path, help="folder written by `python -m vitedge.data`")
    p.add_argument("--out", required=True, type=Path, help="validation JSON to write")
    p.add_argument("--budgets-json", default="{}",
                   help='vitedge.validation_rows.Budgets, e.g. {"max_drop_points": 2.0, "min_agreement": 0.95}')
    p.add_argument("--bench-json", default="{}", help="vitedge.bench.BenchConfig fields overriding the target's")
    p.add_argument("--limit", type=int, help="only the first N test images (quick checks)")
    p.add_argument("--exit-zero", action="store_true", help="exit 0 even when a row failed or is over budget")
    p.add_argument("--unbuilt", metavar="MODEL:FORMAT-PRECISION:REASON",
                   help="the artefact could not be built on this host: write skipped rows saying why")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.unbuilt:
            model, spec, reason = args.unbuilt.split(":", 2)
            fmt, _, precision = spec.partition("-")
            result = unbuilt(model, fmt, precision, args.target, reason)
        else:
            result = validate(args.artefact, args.reference, args.target, args.data,
                              bench=json.loads(args.bench_json), budgets=json.loads(args.budgets_json),
                              limit=args.limit)
    except (runtimes.ArtefactError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_json(args.out, result.to_dict())
    for row in result.rows:
        print(format_row(result, row))
    if not result.rows:
        print(f"{result.model} {result.format}-{result.precision} @ {result.target}: skipped: {result.reason}")
    passed = result.verdict.passed is not False
    return 0 if passed or args.exit_zero else 1


def format_row(result: ValidationResult, row: ValidationRow) -> str:
    """One line per row for logs: what ran, and its headline numbers or why not."""
    head = f"{result.model} {result.format}-{result.precision} @ {result.target} [{row.entry}]"
    if row.status != "ok":
        return f"{head}: {row.status}: {row.reason}"
    verdict = "within budget" if row.verdict.passed else "OVER BUDGET: " + "; ".join(row.verdict.failures)
    return (f"{head}: top-1 {row.accuracy.top1:.4f} (drop {row.drop_points:+.2f} pts), "
            f"agreement {row.parity.top1_agreement:.4f}, max|d| {row.parity.max_abs_delta:.3g}, "
            f"p50 {row.latency_ms.p50:.3f} ms, {verdict}")


if __name__ == "__main__":
    sys.exit(main())
