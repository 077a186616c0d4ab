"""THE validation result contract: what `vitedge.validate` writes and everything else reads.

One `ValidationResult` per (model, artefact, target) file, holding one `ValidationRow` per entry of the
target that runs the artefact. Both are dataclasses: validate builds them, `to_dict` writes them to JSON,
`ValidationResult.from_dict` reads them back and refuses what it does not know (a misspelt or renamed key,
a value of the wrong type), naming where: `rows[2].parity: unknown key(s) ['top1_agrement']`. The report,
the benchmarks and the tests read attributes, so a renamed field breaks them loudly instead of turning a
column into dashes.

Accuracy is in points wherever it is a budget or a drop (`Budgets.max_drop_points`,
`ValidationRow.drop_points`): the quantiser's `max_drop` is in points too, so one number means one thing.
Agreement stays a share (0..1), as `quantize.min_agreement` is.

Files of the previous schema (vitedge-validation/1: budgets as fractions, under "gates"/"gate") are
upgraded on reading (`_upgrade_v1`), so results and committed reports written before still load.

The JSON codec is the configs' (`vitedge.configs.decode` / `to_plain`): one strict reader in the package.
This module imports nothing from vitedge but `io` and `configs`, nor numpy or torch: the report and the benchmarks
read results without loading a runtime.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vitedge.configs import StrictConfig, decode, to_plain
from vitedge.io import read_json

SCHEMA = "vitedge-validation/2"
SCHEMA_V1 = "vitedge-validation/1"
STATUSES = ("ok", "skipped", "failed")


# --------------------------------------------------------------------------- budgets and verdicts
@dataclass(frozen=True)
class Limits(StrictConfig):
    """The budgets one row is held to (its precision's, after `Budgets.by_precision`)."""

    max_drop_points: float | None = None  # top-1 points below the fp32 reference
    min_agreement: float | None = None  # share of test images given the reference's top-1 class


@dataclass(frozen=True)
class Budgets(StrictConfig):
    """What an artefact may lose against its fp32 reference (config `validate.budgets`). `by_precision`
    loosens (or tightens) them per precision: int8 is allowed to lose more than fp16. None: not checked."""

    max_drop_points: float | None = 2.0  # top-1, in points (2.0 = 2 points = 0.02 of the test images)
    min_agreement: float | None = 0.95  # share of test images with the reference's top-1 class
    by_precision: dict[str, dict[str, float | None]] | None = None

    def for_precision(self, precision: str) -> Limits:
        base = Limits(self.max_drop_points, self.min_agreement)
        override = (self.by_precision or {}).get(precision, {})
        try:
            return replace(base, **override)
        except TypeError:
            raise ValueError(f"unknown budget(s) for {precision}: {sorted(set(override) - set(vars(base)))}") from None

    def check(self, row: "ValidationRow") -> "Verdict":
        """The verdict of a measured row (its drop and parity set)."""
        limits = self.for_precision(row.precision)
        failures = []
        drop, agree = row.drop_points, row.parity.top1_agreement
        if limits.max_drop_points is not None and drop > limits.max_drop_points + 1e-10:
            failures.append(f"top-1 drop {drop:.2f} pts > {limits.max_drop_points:.2f} allowed")
        if limits.min_agreement is not None and agree < limits.min_agreement - 1e-12:
            failures.append(f"agreement {agree * 100:.2f}% < {limits.min_agreement * 100:.2f}% required")
        return Verdict(not failures, failures, limits)


@dataclass
class Verdict:
    """A row's (or a file's) verdict against its budgets; `passed` None: nothing was checked."""

    passed: bool | None
    failures: list[str] = field(default_factory=list)
    limits: Limits | None = None

    @classmethod
    def broken(cls, reason: str) -> "Verdict":
        """A failed row never passes: a broken artefact is over every budget."""
        return cls(False, [f"failed: {reason}"])


# --------------------------------------------------------------------------- measurements
@dataclass
class Accuracy:
    """`vitedge.metrics.classification_metrics` on the test split."""

    n: int
    top1: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]


@dataclass
class ReferenceAccuracy:
    """The fp32 reference's accuracy on the same inputs."""

    top1: float
    macro_f1: float


@dataclass
class Parity:
    """`vitedge.metrics.parity_metrics`: the artefact's logits against the reference's."""

    top1_agreement: float
    max_abs_delta: float
    mean_abs_delta: float
    kl: float


@dataclass
class Latency:
    """`vitedge.bench` timings in milliseconds (`Timing.summary_ms`)."""

    p50: float
    p90: float
    p99: float
    n: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    warmup: int | None = None
    stopped_by: str | None = None
    wall_s: float | None = None


@dataclass
class Throughput:
    batch: int
    images_per_s: float
    latency_ms: Latency | None = None


@dataclass
class Memory:
    """`vitedge.bench.PeakMemory`: growth of the process while loading and benchmarking."""

    peak_delta_mb: float
    peak_mb: float | None = None
    baseline_mb: float | None = None
    method: str = ""


@dataclass
class HostLoad:
    """1-minute load average before and after the timing (None where the OS does not say)."""

    before: float | None
    after: float | None

    def peak(self) -> float | None:
        return max((v for v in (self.before, self.after) if v is not None), default=None)


@dataclass
class DataRef:
    """The test split a result was measured on."""

    dir: str
    n: int
    sha256: str = ""
    limit: int | None = None


# --------------------------------------------------------------------------- rows and results
@dataclass
class ValidationRow:
    """One entry of a target running one artefact: skipped (with the reason), failed, or measured."""

    entry: str
    runtime: str
    device: str
    precision: str  # what the arithmetic ran in: the entry's override (torch bf16) or the artefact's
    artefact_precision: str
    threads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    stand_in: str = ""  # "host stand-in ...": timed on this host with a device's thread budget
    status: str = "skipped"
    reason: str = ""
    # measured (status ok)
    runtime_info: dict[str, Any] | None = None  # the runtime's own description: open-ended per backend
    size_bytes: int | None = None
    load_seconds: float | None = None
    latency_ms: Latency | None = None
    throughput: list[Throughput] | None = None
    protocol: dict[str, Any] | None = None  # vitedge.bench.BenchConfig as used
    memory: Memory | None = None
    host_load: HostLoad | None = None
    # scored against the reference
    accuracy: Accuracy | None = None
    reference_accuracy: ReferenceAccuracy | None = None
    drop_points: float | None = None  # reference top-1 minus this row's, in points
    parity: Parity | None = None
    verdict: Verdict | None = None

    def __post_init__(self) -> None:
        _check_status(self.status, f"row {self.entry!r}")


@dataclass
class ValidationResult:
    """One validation file: a model's artefact on one target, its rows, where and when it was measured."""

    model: str
    format: str
    precision: str
    target: str
    schema: str = SCHEMA
    target_description: str = ""
    target_file: str = ""
    artefact: str | None = None
    reference: str | None = None
    reference_sha256: str | None = None
    reference_note: str | None = None
    budgets: Budgets | None = None
    data: DataRef | None = None
    data_note: str | None = None
    rows: list[ValidationRow] = field(default_factory=list)
    status: str = "skipped"
    reason: str = ""
    verdict: Verdict = field(default_factory=lambda: Verdict(None))
    machine: dict[str, Any] | None = None  # vitedge.sysinfo.machine_info(): open-ended
    machine_line: str = ""
    created: str = ""
    seconds: float | None = None
    peer: dict[str, Any] | None = None  # vitedge.benchmarks.peers: a reference point, not a deliverable
    # the file it was read from (the report names it); never written
    source: str = field(default="", compare=False, metadata={"json": False})

    def __post_init__(self) -> None:
        if self.schema != SCHEMA:
            raise ValueError(f"schema {self.schema!r}: this vitedge reads {SCHEMA} (and {SCHEMA_V1})")
        _check_status(self.status, "result")

    @property
    def is_peer(self) -> bool:
        return self.peer is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped; optional fields that are unset are left out."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "ValidationResult":
        """Strict: an unknown or misspelt key anywhere, or a value of the wrong type, is a ValueError naming it."""
        if not is_validation(d):
            raise ValueError("not a vitedge validation result (no 'schema': vitedge-validation/...): "
                             "python -m vitedge.validate writes those")
        return decode(cls, _upgrade_v1(d) if d["schema"] == SCHEMA_V1 else d, "result")


def _check_status(status: str, where: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"{where}: status {status!r} is not one of {', '.join(STATUSES)}")


def is_validation(d: Any) -> bool:
    """Whether a parsed JSON document claims to be a validation result (of any schema version)."""
    return isinstance(d, dict) and str(d.get("schema", "")).startswith("vitedge-validation/")


def load_result(path: str | Path) -> ValidationResult:
    """A validation JSON file, read strictly; errors name the file."""
    try:
        result = ValidationResult.from_dict(read_json(path))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return replace(result, source=Path(path).name)


def to_dict(value: Any) -> Any:
    """Any of this module's dataclasses as JSON-shaped data; a field left at its None default is left out."""
    return to_plain(value, omit_unset=True)


# --------------------------------------------------------------------------- schema 1
def _limits_v1(limits: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 held the drop budget as a fraction ("max_accuracy_drop": 0.02); schema 2 in points."""
    out = dict(limits)
    if "max_accuracy_drop" in out:
        drop = out.pop("max_accuracy_drop")
        out["max_drop_points"] = None if drop is None else round(100 * drop, 10)
    return out


def _verdict_v1(gate: dict[str, Any]) -> dict[str, Any]:
    out = dict(gate)
    if "thresholds" in out:
        out["limits"] = _limits_v1(out.pop("thresholds"))
    return out


def _row_v1(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    if "accuracy_drop" in out:
        drop = out.pop("accuracy_drop")
        out["drop_points"] = None if drop is None else 100 * drop
    if "gate" in out:
        out["verdict"] = _verdict_v1(out.pop("gate"))
    return out


def _upgrade_v1(d: dict[str, Any]) -> dict[str, Any]:
    """A vitedge-validation/1 document as schema 2 spells it: "gates" -> "budgets", "gate" -> "verdict",
    "accuracy_drop" (a fraction) -> "drop_points". Every other key is read as strictly as in schema 2."""
    out = {**d, "schema": SCHEMA, "rows": [_row_v1(r) if isinstance(r, dict) else r for r in d.get("rows") or []]}
    if "gates" in out:
        gates = dict(out.pop("gates"))
        by_precision = {p: _limits_v1(v) for p, v in (gates.pop("by_precision", None) or {}).items()}
        out["budgets"] = {**_limits_v1(gates), **({"by_precision": by_precision} if by_precision else {})}
    if "gate" in out:
        out["verdict"] = _verdict_v1(out.pop("gate"))
    return out
