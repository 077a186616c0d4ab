"""What every int8 backend shares: calibration data, the accuracy gate, the sensitivity search,
speed measurement and the artefact record. Backends (one module per format) only say how to
build a quantised model that keeps some layers in float, how to run it fast, and how to save it.

The recipe, for every format:

1. Reference: the fp32 source checkpoint's val top-1 (PyTorch) and its logits.
2. For each variant the backend offers (e.g. ONNX dynamic, static MinMax, with/without
   transformer fusion): build with everything quantised and evaluate on the validation split.
   The gate: val top-1 may drop at most `max_drop` points below the fp32 source.
3. A variant that fails falls back: each unit (patch embedding, each block's attention and MLP,
   the head) is quantised alone to rank how much it hurts (KL divergence of the logits from
   fp32: continuous, so ties on a small val split do not hide the ranking); then the most
   sensitive units are kept in float one by one until the gate passes or
   `max_fallback_steps` is spent.
4. Variants that pass are timed (batch 1 latency, batch-N throughput, same threads as the fp32
   reference in the same runtime); the fastest is saved. None passing raises
   `QuantizationError`, which says by how many points the best attempt missed.
5. The saved artefact is re-evaluated through `vitedge.runtimes` where it runs on this host,
   and meta.json records method, calibration, the units kept in float, fp32/int8 top-1, drop,
   parity, latency and the CPU's int8 features.
6. Where its backend owns its thread pool (ONNX Runtime, LiteRT), the saved artefact is timed at
   batch 1 on 1, 2, 4 ... threads up to every core; meta.json `bs1_threads` records the fastest
   and runtimes on the same CPU model use it for batch-1 calls (`runtimes.base.bs1_threads`).
"""
from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vitedge import runtimes
from vitedge.artefact import META, RuntimeUnavailable, write_meta
from vitedge.batching import map_batches
from vitedge.bench import BenchConfig, available_cores, benchmark
from vitedge.configs import StrictConfig
from vitedge.data import Split
from vitedge.io import atomic_path
from vitedge.metrics import parity_metrics
from vitedge.model import VisionTransformer
from vitedge.preprocess import Preprocess
from vitedge.sysinfo import machine_info
from vitedge.verify import verify_artefact

log = logging.getLogger("vitedge.quantize")

CALIBRATE_METHODS = ("minmax", "percentile", "entropy")
METHODS = ("auto", "dynamic", "static")
Predict = Callable[[np.ndarray], np.ndarray]
EVAL_BATCH = 128  # images per call when a candidate scores the gate's split


class QuantizationError(RuntimeError):
    """No int8 variant met the accuracy budget. `shortfall` is how many points the best one missed by."""

    def __init__(self, message: str, shortfall: float = math.nan, attempts: list | None = None):
        super().__init__(message)
        self.shortfall, self.attempts = shortfall, attempts or []


@dataclass
class QuantizeConfig(StrictConfig):
    max_drop: float = 1.0  # points of val top-1 an int8 artefact may lose against its fp32 source
    # share of val faces on which int8 must name the class fp32 names (0: not gated). Top-1 alone lets
    # errors cancel: an int8 model may change many answers and lose little accuracy (FER student, ONNX
    # mixed-minmax+fused: 0.08 points below fp32 on val, 98.24% agreement; docs/int8.md)
    min_agreement: float = 0.0
    calibration: int = 256  # training images that calibrate activation ranges (static variants)
    calibrate_method: str = "minmax"  # minmax | percentile | entropy
    method: str = "auto"  # auto: try dynamic and static | dynamic | static
    variants: list[str] = field(default_factory=list)  # explicit variant names (override `method`)
    optimize: str = "auto"  # ONNX: ORT transformer fusion before quantising: auto (try both) | on | off
    max_fallback_steps: int = 6  # units the greedy fallback may keep in float before giving up
    max_sensitivity_units: int = 64  # bound on the units ranked (one build each)
    gate_samples: int = 0  # val images the gate uses (0 = all)
    bench_batch: int = 32  # throughput batch (latency is batch 1)
    bench_seconds: float = 0.5  # timing budget per measurement
    # intra-op threads while timing (0 = every core this process may use). 1 by default: on a shared
    # 2-core host, two OpenMP threads stall each other behind other jobs (100x slower torch calls,
    # measured), and edge apps run a face model on one or two cores anyway
    threads: int = 1
    compile: bool = True  # torch: time under torch.compile (how PT2E int8 is meant to run)
    build_engine: bool = True  # tensorrt: build the engine when TensorRT and a GPU are present
    deployment_target: str = "iOS16"  # coreml: minimum deployment target (as export.coreml.deployment_target)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.calibrate_method not in CALIBRATE_METHODS:
            raise ValueError(f"calibrate_method '{self.calibrate_method}' is not one of {CALIBRATE_METHODS}")
        if self.method not in METHODS:
            raise ValueError(f"method '{self.method}' is not one of {METHODS}")
        if self.max_drop < 0 or self.calibration < 1:
            raise ValueError(f"need max_drop >= 0 and calibration >= 1, got {self.max_drop}, {self.calibration}")
        if not 0 <= self.min_agreement <= 1:
            raise ValueError(f"min_agreement is a fraction in [0, 1], got {self.min_agreement}")


@dataclass
class Candidate:
    """A built int8 model: `predict` for accuracy, `payload` for the backend (to time and save it)."""

    variant: str
    excluded: tuple[str, ...]
    predict: Predict
    payload: Any = None


@dataclass
class Attempt:
    variant: str
    excluded: list[str]
    top1: float
    drop: float  # points below fp32
    parity: dict
    passed: bool
    seconds: float

    def brief(self) -> str:
        kept = f", {len(self.excluded)} unit(s) in float" if self.excluded else ""
        return (f"{self.variant}{kept}: top-1 {100 * self.top1:.2f} (drop {self.drop:+.2f}), "
                f"agreement {100 * self.parity['top1_agreement']:.2f}%")


class Backend:
    """One int8 format. Subclasses implement `variants`, `build`, `save`; the rest has defaults.

    Units are the layer groups the fallback can keep in float, named after the model's modules:
    `patch_embed`, `blocks.{i}.attn`, `blocks.{i}.mlp`, `head` (see `model_units`).
    """

    fmt: str = ""
    runs_here: bool = True  # can this host run the artefact (for timing and the final check)?

    def __init__(self, model: VisionTransformer, info: dict[str, Any], cfg: QuantizeConfig, calib: np.ndarray,
                 work: Path):
        self.model, self.info, self.cfg, self.calib, self.work = model.eval(), info, cfg, calib, work

    def variants(self) -> list[str]:
        raise NotImplementedError

    def units(self, variant: str) -> list[str]:
        return model_units(self.model)

    def build(self, variant: str, exclude: tuple[str, ...]) -> Candidate:
        raise NotImplementedError

    def fast(self, cand: Candidate) -> Predict | None:
        """How the artefact runs in deployment (for timing); None when it cannot run here."""
        return cand.predict

    def reference(self) -> Predict | None:
        """The fp32 model in the same runtime, to time against. None: not measurable here."""
        return None

    def save(self, cand: Candidate, art_dir: Path) -> tuple[str, dict[str, Any]]:
        """Write the artefact's model file into `art_dir`; return (file name, meta.json extras)."""
        raise NotImplementedError

    def describe(self, variant: str) -> dict[str, Any]:
        """Method details for meta.json (quantiser, granularity, how to run it)."""
        return {}

    def nodes(self, variant: str, units: tuple[str, ...]) -> list[str]:
        """What keeping `units` in float means in this format's own terms (graph nodes, modules ...)."""
        return [m for u in units for m in unit_modules(self.model, u)]


# --------------------------------------------------------------------------- shared pieces
def model_units(model: VisionTransformer) -> list[str]:
    depth = model.cfg.depth
    return ["patch_embed", *[f"blocks.{i}.{part}" for i in range(depth) for part in ("attn", "mlp")], "head"]


def unit_modules(model: VisionTransformer, unit: str) -> list[str]:
    """The module names a unit covers (the head unit includes the distillation head and sequence pooling)."""
    if unit == "head":
        return [n for n in ("attn_pool", "head", "head_dist") if getattr(model, n, None) is not None]
    return [unit]


def calibration_images(train: Split, pre: Preprocess, n: int, seed: int = 0) -> np.ndarray:
    """`n` training images, stratified by class so rare classes are seen, preprocessed (no augmentation)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(train.labels)
    per_class = [rng.permutation(np.flatnonzero(train.labels == c)) for c in classes]
    order = [idx for row in zip(*[np.resize(p, max(len(q) for q in per_class)) for p in per_class]) for idx in row]
    picked = list(dict.fromkeys(order))[:n]  # round-robin over classes, no repeats
    return pre(train.images[np.sort(picked)])


def torch_predict(module: Callable[[torch.Tensor], torch.Tensor]) -> Predict:
    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(x))).float().numpy()

    return predict


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def timing(predict: Predict, x: np.ndarray, cfg: QuantizeConfig) -> dict[str, Any]:
    """Batch-1 latency and batch-N throughput with the shared bench protocol, on a small budget."""
    bench = BenchConfig(warmup=3, warmup_seconds=0.0, min_iters=10, max_iters=400, max_seconds=cfg.bench_seconds,
                        time_cap=max(5.0, 4 * cfg.bench_seconds), batch_sizes=(cfg.bench_batch,),
                        throughput_min_iters=3, throughput_max_seconds=cfg.bench_seconds)
    r = benchmark(predict, x, bench)
    tp = r["throughput"][0]
    return {"bs1_ms": r["latency_ms"]["p50"], "bs1_p90_ms": r["latency_ms"]["p90"],
            f"bs{cfg.bench_batch}_ms": tp["latency_ms"]["p50"], "images_per_s": tp["images_per_s"],
            "n": r["latency_ms"]["n"]}


# --------------------------------------------------------------------------- the gate
class Gate:
    """Accuracy of candidates against the fp32 reference on (part of) the validation split."""

    def __init__(self, ref_logits: np.ndarray, x: np.ndarray, labels: np.ndarray, max_drop: float,
                 min_agreement: float = 0.0):
        self.ref_logits, self.x, self.labels, self.max_drop = ref_logits, x, labels, max_drop
        self.min_agreement = min_agreement
        self.fp32_top1 = top1(ref_logits, labels)
        self.attempts: list[Attempt] = []

    def check(self, cand: Candidate, t0: float) -> Attempt:
        acc, drop, parity, passed = self.judge(map_batches(cand.predict, self.x, EVAL_BATCH))
        a = Attempt(cand.variant, list(cand.excluded), acc, drop, parity, passed, round(time.perf_counter() - t0, 2))
        self.attempts.append(a)
        log.info("%s -> %s", a.brief(), "pass" if a.passed else "fail")
        return a

    def judge(self, logits: np.ndarray) -> tuple[float, float, dict[str, float], bool]:
        """(top-1, points below fp32, parity with fp32, within both budgets) of logits on the gate's images."""
        acc = top1(logits, self.labels)
        drop = 100 * (self.fp32_top1 - acc)
        parity = parity_metrics(logits, self.ref_logits)
        passed = drop <= self.max_drop + 1e-9 and parity["top1_agreement"] >= self.min_agreement - 1e-12
        return acc, drop, parity, passed

    def kl(self, cand: Candidate) -> float:
        return parity_metrics(map_batches(cand.predict, self.x, EVAL_BATCH), self.ref_logits)["kl"]


def sensitivity(backend: Backend, variant: str, gate: Gate, limit: int) -> dict[str, float]:
    """Each unit quantised alone (all others float): KL of its logits from fp32. Higher = more sensitive."""
    units = backend.units(variant)[:limit]
    scores = {}
    for u in units:
        cand = backend.build(variant, tuple(v for v in units if v != u))
        scores[u] = gate.kl(cand)
    return dict(sorted(scores.items(), key=lambda kv: -kv[1]))


def gate_variant(backend: Backend, variant: str, gate: Gate, cfg: QuantizeConfig
                 ) -> tuple[Candidate | None, Attempt, dict[str, float]]:
    """Everything quantised; if that fails, the greedy fallback. Returns (passing candidate or None,
    the last attempt, the sensitivity ranking if one was needed)."""
    t0 = time.perf_counter()
    cand = backend.build(variant, ())
    attempt = gate.check(cand, t0)
    if attempt.passed or cfg.max_fallback_steps <= 0:
        return (cand if attempt.passed else None), attempt, {}
    ranking = sensitivity(backend, variant, gate, cfg.max_sensitivity_units)
    log.info("%s: sensitivity (KL vs fp32, one unit quantised at a time): %s", variant,
             ", ".join(f"{u} {s:.2e}" for u, s in ranking.items()))
    excluded: list[str] = []
    best = attempt
    for unit in list(ranking)[:cfg.max_fallback_steps]:
        excluded.append(unit)
        t0 = time.perf_counter()
        cand = backend.build(variant, tuple(excluded))
        attempt = gate.check(cand, t0)
        best = min(best, attempt, key=lambda a: a.drop)
        if attempt.passed:
            return cand, attempt, ranking
    return None, best, ranking


# --------------------------------------------------------------------------- the recipe
@dataclass
class Passing:
    """A candidate that passed the gate, its attempt, and its timing once measured."""

    cand: Candidate
    attempt: Attempt
    speed: dict[str, Any] = field(default_factory=dict)


def quantize_to_artefact(backend_cls: type[Backend], model: VisionTransformer, info: dict[str, Any],
                         splits: dict[str, Split], cfg: QuantizeConfig, art_dir: Path) -> dict[str, Any]:
    """Run the recipe (module docstring) with one backend; write `art_dir` (model file + meta.json).

    Returns the meta.json dict. Raises QuantizationError when no variant meets the budget.
    """
    threads = cfg.threads or available_cores()
    torch.set_num_threads(threads)
    gate = make_gate(model, info, splits["val"], cfg)
    calib = calibration_images(splits["train"], Preprocess.from_dict(info["preprocess"]), cfg.calibration, cfg.seed)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vitedge-quantize-") as work:
        backend = backend_cls(model, info, cfg, calib, Path(work))
        passing, rankings = gate_candidates(backend, gate, cfg)
        fp32_speed, chosen = fastest(backend, passing, gate.x[:max(cfg.bench_batch, 1)], cfg)
        file_name, extras, final = keep(backend, chosen.cand, gate, info, art_dir)
        # the saved artefact at batch 1 on 1..every core: runtimes use the fastest pool for batch-1 calls
        extras["bs1_threads"] = runtimes.measure_bs1_threads(art_dir, cfg.bench_seconds)
    record = {
        "method": backend.describe(chosen.cand.variant),
        "variant": chosen.cand.variant,
        "calibration": {"images": len(calib), "source": "train split, stratified, no augmentation",
                        "method": cfg.calibrate_method, "seed": cfg.seed},
        "gate": {"split": "val", "n": len(gate.x), "max_drop_points": cfg.max_drop,
                 "min_agreement": cfg.min_agreement},
        "fp32_top1": gate.fp32_top1, "int8_top1": chosen.attempt.top1, "drop_points": chosen.attempt.drop,
        "kept_float": list(chosen.cand.excluded),
        "excluded_nodes": backend.nodes(chosen.cand.variant, chosen.cand.excluded),
        "parity": chosen.attempt.parity, "final_check": final,
        "sensitivity": rankings.get(chosen.cand.variant, {}),
        "latency": {"fp32": fp32_speed, "int8": chosen.speed, "threads": threads, "batch": cfg.bench_batch,
                    **_speedup(fp32_speed, chosen.speed)},
        "variants": [{"variant": v, "passed": any(a.variant == v and a.passed for a in gate.attempts),
                      "timing": next((p.speed for p in passing if p.cand.variant == v), None)}
                     for v in dict.fromkeys(a.variant for a in gate.attempts)],
        "attempts": [asdict(a) for a in gate.attempts],
        "cpu_features": machine_info()["cpu"]["features"],
        "seconds": round(time.perf_counter() - t_start, 1),
        "config": cfg.as_dict(),
    }
    return write_meta(art_dir, backend.fmt, "int8", file_name, info, record["seconds"], quantization=record, **extras)


def make_gate(model: VisionTransformer, info: dict[str, Any], val: Split, cfg: QuantizeConfig) -> Gate:
    """The gate over (a seeded sample of) the validation split, against the fp32 model's own logits."""
    if cfg.gate_samples and cfg.gate_samples < len(val):
        val = val.subset(np.random.default_rng(cfg.seed).permutation(len(val))[:cfg.gate_samples])
    x_val = Preprocess.from_dict(info["preprocess"])(val.images)
    return Gate(map_batches(torch_predict(model), x_val, EVAL_BATCH), x_val, val.labels, cfg.max_drop,
                cfg.min_agreement)


def gate_candidates(backend: Backend, gate: Gate, cfg: QuantizeConfig
                    ) -> tuple[list[Passing], dict[str, dict[str, float]]]:
    """Every variant through the gate (with its fallback): those that pass, and the sensitivity rankings
    that were needed. Raises QuantizationError when none passes."""
    passing: list[Passing] = []
    rankings: dict[str, dict[str, float]] = {}
    for variant in backend.variants():
        cand, attempt, ranking = gate_variant(backend, variant, gate, cfg)
        if ranking:
            rankings[variant] = ranking
        if cand is not None:
            passing.append(Passing(cand, attempt))
    if not passing:
        best = min(gate.attempts, key=lambda a: a.drop)
        shortfall = best.drop - cfg.max_drop
        agreeing = (f" and agrees with fp32 on {100 * cfg.min_agreement:.1f}% of faces" if cfg.min_agreement else "")
        raise QuantizationError(
            f"{backend.fmt} int8: no variant keeps val top-1 within {cfg.max_drop:.2f} points of fp32 "
            f"({100 * gate.fp32_top1:.2f}){agreeing}; the best, {best.brief()}, misses by {max(shortfall, 0):.2f} "
            f"points after up to {cfg.max_fallback_steps} fallback step(s). Raise quantize.max_drop "
            f"(or lower quantize.min_agreement) or quantize.max_fallback_steps, or try another calibrate_method.",
            shortfall, gate.attempts)
    return passing, rankings


def fastest(backend: Backend, passing: list[Passing], x_bench: np.ndarray, cfg: QuantizeConfig
            ) -> tuple[dict[str, Any] | None, Passing]:
    """Time the fp32 reference and every passing variant in the runtime that deploys them; return
    (fp32 timing, the fastest at batch 1: the edge case). Unmeasurable ones keep the backend's order."""
    ref_fast = backend.reference()
    fp32_speed = timing(ref_fast, x_bench, cfg) if ref_fast is not None else None
    for p in passing:
        fast = backend.fast(p.cand)
        p.speed = timing(fast, x_bench, cfg) if fast is not None else {}
    return fp32_speed, min(passing, key=lambda p: p.speed.get("bs1_ms", math.inf))


def keep(backend: Backend, cand: Candidate, gate: Gate, info: dict[str, Any], art_dir: Path
         ) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Save the chosen candidate into `art_dir` and check the saved file: (file name, meta extras, checks).
    No complete-looking artefact is left behind a failed check."""
    art_dir.mkdir(parents=True, exist_ok=True)
    (art_dir / META).unlink(missing_ok=True)  # an old meta.json must not vouch for a half-written artefact
    file_name, extras = backend.save(cand, art_dir)
    try:
        return file_name, extras, _final_check(art_dir, file_name, backend, gate, info, extras)
    except Exception:
        (art_dir / META).unlink(missing_ok=True)
        raise


def _speedup(fp32: dict | None, int8: dict | None) -> dict[str, Any]:
    if not fp32 or not int8:
        return {"speedup_bs1": None, "faster_than_fp32": None}
    s = fp32["bs1_ms"] / int8["bs1_ms"]
    return {"speedup_bs1": round(s, 3), "speedup_batch": round(int8["images_per_s"] / fp32["images_per_s"], 3),
            "faster_than_fp32": bool(s > 1.0)}


def _final_check(art_dir: Path, file_name: str, backend: Backend, gate: Gate, info: dict[str, Any],
                 extras: dict[str, Any]) -> dict[str, Any]:
    """Check the saved file itself: the exporter's own checks (spec, weights read back, parity on
    random inputs) and, where it runs here, val top-1 through vitedge.runtimes (what deployment loads)."""
    # a provisional meta.json lets the checks load the artefact; the final one replaces it
    meta = write_meta(art_dir, backend.fmt, "int8", file_name, info, 0.0, **extras)
    checks: dict[str, Any] = {"export_checks": verify_artefact(art_dir, backend.model, meta)}
    if not backend.runs_here:
        checks["skipped"] = (f"{backend.fmt} artefacts do not run on this host; gated on "
                             f"{backend.describe('').get('evaluated_with', 'an emulation')}")
        return checks
    try:
        rt = runtimes.load(art_dir, runtime="auto", device="cpu")
    except RuntimeUnavailable as exc:
        return {**checks, "skipped": str(exc)}
    acc, drop, parity, passed = gate.judge(map_batches(rt.predict, gate.x, EVAL_BATCH))
    agreement = parity["top1_agreement"]
    if not passed:
        raise QuantizationError(f"{art_dir}: the saved artefact scores {100 * acc:.2f} on val, {drop:.2f} points "
                                f"below fp32 (budget {gate.max_drop}), agreeing on {100 * agreement:.2f}% of faces "
                                f"(at least {100 * gate.min_agreement:.1f}%): it differs from the model that passed "
                                "the gate", drop - gate.max_drop)
    return {**checks, "runtime": rt.name, "top1": acc, "drop_points": drop, "agreement": agreement}


def copy_file(src: Path, dest: Path) -> Path:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return dest
