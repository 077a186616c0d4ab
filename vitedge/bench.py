"""Latency, throughput and memory measurement: one protocol for every runtime and target.

The protocol (what `measure` does with any zero-argument callable):

1. Warm-up: at least `warmup` calls and at least `warmup_seconds` of them, none recorded.
   First calls pay for lazy initialisation, allocator growth, kernel selection, JIT /
   torch.compile and TensorRT autotuning; counting them would inflate the tail.
2. Timed calls, each timed on its own, until `max_iters` calls, or `max_seconds` have passed
   and at least `min_iters` calls were made, or `time_cap` seconds have passed whatever the
   count. Count bounds keep fast models from running forever; the time bound keeps slow ones
   from blowing the job's budget, while `min_iters` keeps enough samples for the percentiles
   to mean something. `n` and the reason for stopping are always reported: a p99 over 50
   samples is the second-largest value, and a "time_cap" stop means fewer than asked for.
3. Summary in milliseconds: p50 / p90 / p99, mean, std, min, max, `n`, and why it stopped.

On CUDA each call is bracketed by CUDA events on the current stream and synchronised
(`cuda_event_timer`): host timers would measure kernel *launch*, not execution.

`benchmark(predict, x)` applies the protocol to batch-1 latency and to throughput at larger
batches (images/s = batch / p50 latency of that batch). `PeakMemory` measures how much a
block grows the process: resident-set peak on CPU, `torch.cuda.max_memory_allocated` on GPU.

Nothing here knows about models or runtimes: tests drive it with a fake clock.
"""
from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from vitedge.configs import StrictConfig

Clock = Callable[[], float]
# A call timer runs one call and returns the seconds it took.
CallTimer = Callable[[Callable[[], Any]], float]


class Stopwatch:
    """`with Stopwatch() as t: ...; t.seconds`: the wall time of one block (export, build steps)."""

    def __enter__(self) -> "Stopwatch":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


@dataclass(frozen=True)
class BenchConfig(StrictConfig):
    warmup: int = 10  # calls discarded before timing
    warmup_seconds: float = 0.25  # ... and at least this long (lets clocks and caches settle)
    min_iters: int = 50  # timed calls always made (unless max_iters is lower)
    max_iters: int = 1000  # timed calls never exceeded
    max_seconds: float = 2.0  # stop after this long once min_iters are done
    time_cap: float = 20.0  # stop after this long even short of min_iters (a very slow model or host)
    batch_sizes: tuple[int, ...] = (8, 64)  # throughput batches (latency is always batch 1)
    # throughput batches are slower per call and their mean is what matters: a smaller budget
    throughput_min_iters: int = 5
    throughput_max_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.min_iters < 1 or self.max_iters < self.min_iters or self.warmup < 0 or self.time_cap < self.max_seconds:
            raise ValueError("bench needs 1 <= min_iters <= max_iters, warmup >= 0, time_cap >= max_seconds; "
                             f"got {self}")

    def merged(self, overrides: dict[str, Any] | None) -> "BenchConfig":
        """This config with some fields replaced (e.g. a quick budget from the workflow config)."""
        return self.replace(**(overrides or {}))


@dataclass
class Timing:
    """Per-call times of one measurement, in seconds, and how the loop ended."""

    samples: np.ndarray
    warmup_calls: int
    stopped_by: str  # "max_iters" | "max_seconds" | "time_cap"
    wall_seconds: float = 0.0  # whole loop including warm-up and timer overhead

    @property
    def n(self) -> int:
        return len(self.samples)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples, q))

    @property
    def p50(self) -> float:
        return self.percentile(50)

    def summary_ms(self) -> dict[str, Any]:
        s = self.samples * 1e3
        return {
            "p50": float(np.percentile(s, 50)), "p90": float(np.percentile(s, 90)),
            "p99": float(np.percentile(s, 99)), "mean": float(s.mean()), "std": float(s.std()),
            "min": float(s.min()), "max": float(s.max()), "n": self.n, "warmup": self.warmup_calls,
            "stopped_by": self.stopped_by, "wall_s": round(self.wall_seconds, 4),
        }


def wall_timer(clock: Clock = time.perf_counter) -> CallTimer:
    """Host-side timing: enough for runtimes whose call returns when the result is ready (CPU, numpy out)."""

    def timed(fn: Callable[[], Any]) -> float:
        t0 = clock()
        fn()
        return clock() - t0

    return timed


def cuda_event_timer() -> CallTimer:
    """Device-side timing with CUDA events on the current stream, synchronised after each call."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed(fn: Callable[[], Any]) -> float:
        torch.cuda.synchronize()  # nothing queued earlier may leak into this call's interval
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3  # ms -> s

    return timed


def measure(fn: Callable[[], Any], *, warmup: int = 10, warmup_seconds: float = 0.0, min_iters: int = 50,
            max_iters: int = 1000, max_seconds: float = 2.0, time_cap: float = float("inf"),
            timer: CallTimer | None = None, clock: Clock = time.perf_counter) -> Timing:
    """Time `fn()` with the protocol in the module docstring.

    `clock` drives the budgets (and the default timer); `timer` times single calls and may be
    a device timer. Both are injectable so the protocol can be tested without real time.
    """
    timer = timer or wall_timer(clock)
    max_iters = max(1, max_iters)
    min_iters = min(max(1, min_iters), max_iters)
    t_begin = clock()
    done = 0
    # warm-up: count-bounded and time-bounded, but never longer than a full measurement could be
    while done < warmup or (clock() - t_begin < warmup_seconds and done < max_iters):
        fn()
        done += 1
    samples: list[float] = []
    t_start = clock()
    stopped_by = "max_iters"
    while len(samples) < max_iters:
        elapsed = clock() - t_start
        if len(samples) >= min_iters and elapsed >= max_seconds:
            stopped_by = "max_seconds"
            break
        if samples and elapsed >= time_cap:
            stopped_by = "time_cap"
            break
        samples.append(timer(fn))
    return Timing(np.asarray(samples, dtype=np.float64), done, stopped_by, clock() - t_begin)


def batch_of(x: np.ndarray, batch: int) -> np.ndarray:
    """`batch` inputs taken from `x` (repeated when `x` is shorter), contiguous for the runtime."""
    reps = -(-batch // len(x))  # ceil
    return np.ascontiguousarray(np.concatenate([x] * reps)[:batch]) if reps > 1 else np.ascontiguousarray(x[:batch])


def benchmark(predict: Callable[[np.ndarray], Any], x: np.ndarray, cfg: BenchConfig = BenchConfig(),
              timer: CallTimer | None = None, clock: Clock = time.perf_counter) -> dict[str, Any]:
    """Batch-1 latency and larger-batch throughput of `predict` on real inputs `x` (N, ...).

    Returns {"latency_ms": {p50, p90, p99, ...}, "throughput": [{batch, images_per_s, ...}],
    "protocol": cfg}. Throughput uses each batch's p50, so one slow outlier call (a page
    fault, another process) does not decide it.
    """
    x1 = batch_of(x, 1)
    lat = measure(lambda: predict(x1), warmup=cfg.warmup, warmup_seconds=cfg.warmup_seconds,
                  min_iters=cfg.min_iters, max_iters=cfg.max_iters, max_seconds=cfg.max_seconds,
                  time_cap=cfg.time_cap, timer=timer, clock=clock)
    throughput = []
    cap = max(cfg.throughput_max_seconds, cfg.time_cap / 2)
    for b in cfg.batch_sizes:
        xb = batch_of(x, b)
        t = measure(lambda: predict(xb), warmup=max(1, cfg.warmup // 5), warmup_seconds=0.0,
                    min_iters=cfg.throughput_min_iters, max_iters=cfg.max_iters,
                    max_seconds=cfg.throughput_max_seconds, time_cap=cap, timer=timer, clock=clock)
        throughput.append({"batch": b, "images_per_s": b / t.p50, "latency_ms": t.summary_ms()})
    return {"latency_ms": lat.summary_ms(), "throughput": throughput, "protocol": cfg.as_dict()}


# --------------------------------------------------------------------------- memory
def _proc_status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """Linux >= 4.0: writing 5 to clear_refs resets VmHWM (the peak RSS) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


@dataclass
class PeakMemory:
    """`with PeakMemory(device) as m: ...` -> m.result: how much the block grew the process at its peak.

    CPU: peak resident set during the block minus the resident set before it. On Linux the
    kernel's peak counter is reset on entry, so earlier peaks (loading data, the reference
    model) do not hide this block's. Elsewhere `ru_maxrss` is lifetime-wide: the delta is a
    lower bound and is labelled so.
    CUDA: `torch.cuda.max_memory_allocated` minus the allocation before the block (memory
    held by the caching allocator or by TensorRT outside torch is not counted).
    """

    device: str = "cpu"
    result: dict[str, Any] = field(default_factory=dict)

    def __enter__(self) -> "PeakMemory":
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._exact = _reset_peak_rss() and _proc_status_kb("VmHWM") is not None
            rss = _proc_status_kb("VmRSS")
            self._base = rss * 1024 if rss is not None else _ru_maxrss_bytes()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
            method = "torch.cuda.max_memory_allocated"
        elif self._exact:
            peak, method = _proc_status_kb("VmHWM") * 1024, "VmHWM (peak RSS, reset on entry)"
        else:
            peak, method = _ru_maxrss_bytes(), "ru_maxrss (lifetime peak: delta is a lower bound)"
        self.result = {"peak_delta_mb": max(0, peak - self._base) / 2**20, "peak_mb": peak / 2**20,
                       "baseline_mb": self._base / 2**20, "method": method}


def available_cores() -> int:
    """CPU cores this process may run on (cgroup/affinity aware where the OS tells)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


__all__ = ["BenchConfig", "CallTimer", "Stopwatch", "Timing", "measure", "benchmark", "batch_of", "wall_timer",
           "cuda_event_timer", "PeakMemory", "available_cores"]
