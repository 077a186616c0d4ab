"""Deployment targets: `runtimes/<target>.yaml` -> which artefacts run there, how, and what it needs.

A target file (see runtimes/cpu.yaml for a commented one):

    name: mobile
    threads: 4                   # intra-op threads, capped at the cores the host has
    requires: {}                 # cuda: true | cuda_capability: 8.0 | os: [Darwin] | modules: [tensorrt]
    native_os: [iOS, Android]    # measured on any other OS -> rows labelled "host stand-in"
    bench: {...}                 # vitedge.bench.BenchConfig fields
    entries:
      - name: ExecuTorch XNNPACK
        artefacts: [executorch-fp32, executorch-int8]   # <format>-<precision> (vitedge.artefact.artefact_key)
        runtime: executorch      # a vitedge.runtimes backend
        device: cpu
        threads: 2               # optional, overrides the target's
        options: {dtype: fp16}   # optional, passed to the runtime
        requires: {...}          # optional, on top of the target's

An artefact is named `<format>-<precision>` (`vitedge.artefact.artefact_key`): `checkpoint-fp32` is
the training checkpoint (models/<name>.pt, the PyTorch fp32 reference), `torch-int8` a saved
torch.export program (.pt2). A name with an unknown format or precision is an error, not a silent miss.

`unmet(requires)` answers "why can this not run here?", from the host before asking torch when
it can (no NVIDIA driver -> no CUDA: `vitedge.hosts.cuda_unavailable_reason`), so the reason names
what is actually missing.
"""
from __future__ import annotations

import importlib.util
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vitedge.artefact import CHECKPOINT, FORMAT_TABLE, PRECISIONS, artefact_key
from vitedge.bench import BenchConfig, available_cores
from vitedge.hosts import cuda_unavailable_reason

TARGETS_DIR = Path(__file__).resolve().parents[1] / "runtimes"
REQUIREMENT_KEYS = ("cuda", "cuda_capability", "os", "modules")


def known_formats() -> tuple[str, ...]:
    """What an entry's `artefacts` may name: every format of the table, and the training checkpoint
    (checkpoint-fp32)."""
    return (*FORMAT_TABLE, CHECKPOINT)


def artefact_spec(item: str | dict, precision: str = "fp32") -> tuple[str, str]:
    """A config entry naming an artefact -> (format, precision): "onnx" (the default precision),
    "onnx-fp16", or {"format": "onnx", "precision": "fp16"}."""
    if isinstance(item, dict):
        return item["format"], item.get("precision", precision)
    fmt, _, prec = str(item).partition("-")
    return fmt, prec or precision


@dataclass(frozen=True)
class Entry:
    """One way of running artefacts on a target (a runtime, a device, its settings)."""

    name: str
    artefacts: tuple[str, ...]
    runtime: str
    device: str = "cpu"
    threads: int | None = None  # requested; `Target.threads_for` applies the host's cap
    options: dict[str, Any] = field(default_factory=dict)
    requires: dict[str, Any] = field(default_factory=dict)

    @property
    def precision_override(self) -> str | None:
        """The compute precision when the entry changes it (torch eager in fp16), else None."""
        return self.options.get("dtype")


@dataclass(frozen=True)
class Target:
    name: str
    path: Path
    description: str = ""
    threads: int | None = None
    requires: dict[str, Any] = field(default_factory=dict)
    native_os: tuple[str, ...] = ()
    bench: BenchConfig = BenchConfig()
    entries: tuple[Entry, ...] = ()

    def entries_for(self, fmt: str, precision: str) -> list[Entry]:
        key = artefact_key(fmt, precision)
        return [e for e in self.entries if key in e.artefacts]

    def accepts(self, fmt: str, precision: str) -> bool:
        return bool(self.entries_for(fmt, precision))

    def artefacts(self) -> list[str]:
        """Every <format>-<precision> some entry runs, in file order."""
        return list(dict.fromkeys(a for e in self.entries for a in e.artefacts))

    def threads_for(self, entry: Entry) -> int | None:
        want = entry.threads if entry.threads is not None else self.threads
        return None if want is None else max(1, min(int(want), available_cores()))

    def stand_in(self) -> str:
        """'' when measured on the target's own OS (or the target names none), else the label for rows."""
        if not self.native_os or platform.system() in self.native_os:
            return ""
        return f"host stand-in ({platform.system()} {platform.machine()}, not {'/'.join(self.native_os)})"


def _known_key(key: Any) -> bool:
    """"onnx-int8", "checkpoint-fp32": a known format and precision joined as `artefact_key` joins them."""
    fmt, sep, precision = str(key).partition("-")
    return bool(sep) and fmt in known_formats() and precision in PRECISIONS


def _check_requires(req: Any, where: str) -> dict[str, Any]:
    req = dict(req or {})
    unknown = set(req) - set(REQUIREMENT_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown requirement(s) {sorted(unknown)}; known: {', '.join(REQUIREMENT_KEYS)}")
    return req


def load_target(name_or_path: str | os.PathLike) -> Target:
    """`load_target("cpu")` (from runtimes/) or `load_target("path/to/target.yaml")`."""
    path = Path(name_or_path)
    if not path.suffix:
        path = TARGETS_DIR / f"{path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in TARGETS_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"target file {path} not found (targets in {TARGETS_DIR}: {known})")
    with open(path, encoding="utf-8") as fh:
        d = yaml.safe_load(fh) or {}
    entries = []
    for i, e in enumerate(d.get("entries") or []):
        where = f"{path}: entries[{i}]"
        missing = [k for k in ("name", "artefacts", "runtime") if k not in e]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        bad = [a for a in e["artefacts"] if not _known_key(a)]
        if bad:
            raise ValueError(f"{where}: artefacts are spelt <format>-<precision> with a format in "
                             f"{', '.join(known_formats())} and a precision in {', '.join(PRECISIONS)}; got {bad}")
        entries.append(Entry(name=str(e["name"]), artefacts=tuple(e["artefacts"]), runtime=str(e["runtime"]),
                             device=str(e.get("device", "cpu")), threads=e.get("threads"),
                             options=dict(e.get("options") or {}), requires=_check_requires(e.get("requires"), where)))
    return Target(name=str(d.get("name", path.stem)), path=path, description=str(d.get("description", "")),
                  threads=d.get("threads"), requires=_check_requires(d.get("requires"), str(path)),
                  native_os=tuple(d.get("native_os") or ()), bench=BenchConfig.from_dict(d.get("bench")),
                  entries=tuple(entries))


# --------------------------------------------------------------------------- requirements
def unmet(requires: dict[str, Any]) -> str | None:
    """None when this host meets every requirement, else the first reason it does not."""
    oses = requires.get("os")
    if oses and platform.system() not in oses:
        return f"needs {' or '.join(oses)} (this host runs {platform.system()})"
    for module in requires.get("modules") or ():
        if importlib.util.find_spec(module) is None:
            return f"python module '{module}' is not installed"
    if requires.get("cuda") or requires.get("cuda_capability") is not None:
        return cuda_unavailable_reason(requires.get("cuda_capability"))
    return None


def matrix(targets: list[Target], artefacts: list[tuple[str, str, str]]) -> list[tuple[str, str, str, str]]:
    """(model, format, precision) x targets -> the (model, format, precision, target) pairs to validate:
    those some entry of the target runs. The workflow and the report both use this, so they agree."""
    return [(m, f, p, t.name) for t in targets for (m, f, p) in artefacts if t.accepts(f, p)]
