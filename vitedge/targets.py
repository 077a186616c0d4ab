"""Deployment targets: `runtimes/<target>.yaml` -> which artefacts run there, how, and what it needs.

A target file (see runtimes/cpu.yaml for a commented one):

    name: mobile
    threads: 4                   # intra-op threads, capped at the cores the host has
    requires: {}                 # cuda: true | cuda_capability: 8.0 | os: [Darwin] | modules: [tensorrt]
    native_os: [iOS, Android]    # measured on any other OS -> rows labelled "host stand-in"
    bench: {...}                 # vitedge.bench.BenchConfig fields
    entries:
      - name: ExecuTorch XNNPACK
        artefacts: [executorch-fp32, executorch-int8]   # <format>-<precision>
        runtime: executorch      # a vitedge.runtimes backend
        device: cpu
        threads: 2               # optional, overrides the target's
        options: {dtype: fp16}   # optional, passed to the runtime
        requires: {...}          # optional, on top of the target's

`unmet(requires)` answers "why can this not run here?", from the host before asking torch when
it can (no NVIDIA driver -> no CUDA), so the reason names what is actually missing.
"""
from __future__ import annotations

import importlib.util
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vitedge.bench import BenchConfig, available_cores

TARGETS_DIR = Path(__file__).resolve().parents[1] / "runtimes"
REQUIREMENT_KEYS = ("cuda", "cuda_capability", "os", "modules")
# `torch-fp32` is the vitedge .pt checkpoint; the runtimes package calls that format "checkpoint"
CHECKPOINT_FORMAT = "torch"


def artefact_key(fmt: str, precision: str) -> str:
    """("onnx", "int8") -> "onnx-int8", the spelling target files and validation file names use."""
    return f"{CHECKPOINT_FORMAT if fmt == 'checkpoint' else fmt}-{precision}"


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
        bad = [a for a in e["artefacts"] if a.count("-") != 1]
        if bad:
            raise ValueError(f"{where}: artefacts are spelt <format>-<precision>, got {bad}")
        entries.append(Entry(name=str(e["name"]), artefacts=tuple(e["artefacts"]), runtime=str(e["runtime"]),
                             device=str(e.get("device", "cpu")), threads=e.get("threads"),
                             options=dict(e.get("options") or {}), requires=_check_requires(e.get("requires"), where)))
    return Target(name=str(d.get("name", path.stem)), path=path, description=str(d.get("description", "")),
                  threads=d.get("threads"), requires=_check_requires(d.get("requires"), str(path)),
                  native_os=tuple(d.get("native_os") or ()), bench=BenchConfig.from_dict(d.get("bench")),
                  entries=tuple(entries))


# --------------------------------------------------------------------------- requirements
def _cuda_reason(min_capability: float | None = None) -> str | None:
    # the host first: without a driver the precise reason is the missing driver, not torch's view
    if platform.system() == "Linux" and not os.path.exists("/proc/driver/nvidia") and not shutil.which("nvidia-smi"):
        return "no CUDA GPU (no NVIDIA driver on this host)"
    if platform.system() == "Darwin":
        return "no CUDA on macOS"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"no CUDA GPU visible to torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'})"
    if min_capability is not None:
        major, minor = torch.cuda.get_device_capability(0)
        if major + minor / 10 < float(min_capability):
            return (f"{torch.cuda.get_device_name(0)} has compute capability {major}.{minor}, "
                    f"this needs >= {min_capability}")
    return None


def unmet(requires: dict[str, Any]) -> str | None:
    """None when this host meets every requirement, else the first reason it does not."""
    oses = requires.get("os")
    if oses and platform.system() not in oses:
        return f"needs {' or '.join(oses)} (this host runs {platform.system()})"
    for module in requires.get("modules") or ():
        if importlib.util.find_spec(module) is None:
            return f"python module '{module}' is not installed"
    if requires.get("cuda") or requires.get("cuda_capability") is not None:
        return _cuda_reason(requires.get("cuda_capability"))
    return None


def matrix(targets: list[Target], artefacts: list[tuple[str, str, str]]) -> list[tuple[str, str, str, str]]:
    """(model, format, precision) x targets -> the (model, format, precision, target) pairs to validate:
    those some entry of the target runs. The workflow and the report both use this, so they agree."""
    return [(m, f, p, t.name) for t in targets for (m, f, p) in artefacts if t.accepts(f, p)]
