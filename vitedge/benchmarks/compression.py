"""fp32 vs int8, per format, on this machine: accuracy, size, latency. A script, not a test.

    python -m vitedge.benchmarks.compression --run results/default [--split test] [--md out.md]

For every int8 artefact of a run (`<run>/artefacts/<model>/<format>-int8/`) it prints one row:

- accuracy: val top-1 of the fp32 source and of the int8 model as the quantiser's gate measured
  it, and test top-1 of both re-measured here through `vitedge.runtimes` (what deployment loads;
  "–" where the format does not run on this host, e.g. Core ML off macOS);
- size: the int8 file against the fp32 artefact of the same format (or the checkpoint);
- latency: batch-1 median and batch-N throughput of fp32 and int8 in the format's own runtime,
  as the quantiser timed them (same process, same threads, back to back), and the verdict: an
  int8 model that is not faster than fp32 is reported as such, not hidden.

Then "What a user gains" (`--threads 1 2`, measured here, `--no-speed` to skip): every artefact
of each model (and its checkpoint in torch eager fp32) through `vitedge.runtimes`, at each thread
count, batch 1 (p50) and a batch (`--batch`, images/s), with two ratios each: against fp32 of the
same runtime (what int8 buys there) and against torch eager fp32 of the same model at the same
threads (what leaving PyTorch buys). Artefacts whose runtime is missing here are listed with why.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

import numpy as np
import torch

from vitedge import runtimes
from vitedge.artefact import read_meta
from vitedge.bench import BenchConfig, available_cores, benchmark
from vitedge.data import load_splits
from vitedge.evaluate import predict_split
from vitedge.io import atomic_write_text, write_json
from vitedge.quantize.core import top1
from vitedge.sysinfo import describe


def _fmt(v, spec: str, scale: float = 1.0) -> str:
    return format(v * scale, spec) if isinstance(v, (int, float)) else "–"


@functools.lru_cache(maxsize=None)  # a checkpoint is the fp32 source of every int8 format: score it once
def test_top1(path: Path, split_name: str, run: Path) -> float | None:
    """Top-1 of an artefact or checkpoint on a split of the run, through vitedge.runtimes (its own
    preprocessing); None where it cannot run here."""
    try:
        rt = runtimes.load(path, runtime="auto", device="cpu", threads=1)
    except (runtimes.RuntimeUnavailable, runtimes.ArtefactError):
        return None
    split = load_splits(run / "data", (split_name,))[split_name]
    return top1(predict_split(rt, split, progress=False), split.labels)


def rows(run: Path, split_name: str) -> list[dict]:
    remeasure = split_name != "none"
    out = []
    for meta_path in sorted((run / "artefacts").glob("*/*-int8/meta.json")):
        art = meta_path.parent
        meta = read_meta(art)
        q = meta.get("quantization") or {}
        model = art.parent.name
        ckpt = Path(meta["source_checkpoint"])
        fp32_dir = art.parent / f"{meta['format']}-fp32"
        fp32_size = read_meta(fp32_dir)["size_bytes"] if (fp32_dir / "meta.json").is_file() else ckpt.stat().st_size
        lat = q.get("latency") or {}
        f32, i8 = lat.get("fp32") or {}, lat.get("int8") or {}
        faster = lat.get("faster_than_fp32")
        out.append({
            "model": model, "format": meta["format"], "variant": q.get("variant", "?"),
            "fp32_val": q.get("fp32_top1"), "int8_val": q.get("int8_top1"), "drop": q.get("drop_points"),
            "fp32_test": test_top1(ckpt, split_name, run) if remeasure and ckpt.is_file() else None,
            "int8_test": test_top1(art, split_name, run) if remeasure else None,
            "fp32_mb": fp32_size / 1e6, "int8_mb": meta["size_bytes"] / 1e6,
            "fp32_ms": f32.get("bs1_ms"), "int8_ms": i8.get("bs1_ms"),
            "fp32_ips": f32.get("images_per_s"), "int8_ips": i8.get("images_per_s"),
            "speedup": lat.get("speedup_bs1"), "batch": lat.get("batch"), "threads": lat.get("threads"),
            "kept_float": q.get("kept_float") or [],
            "verdict": "faster" if faster else "NOT faster than fp32: no win" if faster is False
            else "speed not measurable here",
        })
    return out


def table(rs: list[dict], split_name: str) -> str:
    remeasured = split_name != "none"
    head = ["model", "format", "variant", "val top-1 fp32→int8 (drop)",
            *([f"{split_name} top-1 fp32→int8"] if remeasured else []),
            "size MB fp32→int8", "bs1 ms fp32→int8", "speedup", "img/s fp32→int8 (batch)", "kept float", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rs:
        lines.append("| " + " | ".join([
            r["model"], r["format"], r["variant"],
            f"{_fmt(r['fp32_val'], '.2f', 100)} → {_fmt(r['int8_val'], '.2f', 100)} ({_fmt(r['drop'], '+.2f')})",
            *([f"{_fmt(r['fp32_test'], '.2f', 100)} → {_fmt(r['int8_test'], '.2f', 100)}"] if remeasured else []),
            f"{r['fp32_mb']:.2f} → {r['int8_mb']:.2f}",
            f"{_fmt(r['fp32_ms'], '.3f')} → {_fmt(r['int8_ms'], '.3f')}",
            f"x{_fmt(r['speedup'], '.2f')}" if r["speedup"] else "–",
            f"{_fmt(r['fp32_ips'], '.0f')} → {_fmt(r['int8_ips'], '.0f')} ({r['batch'] or '–'})",
            ", ".join(r["kept_float"]) or "none", r["verdict"]]) + " |")
    return "\n".join(lines)


# (runtime label, runtime, options) per artefact format; "checkpoint" is the .pt in torch eager
SPEED_RUNTIMES = {"checkpoint": ("torch eager", "torch", {}), "onnx": ("onnxruntime", "onnx", {}),
                  "ort": ("ORT format", "onnx", {}), "litert": ("LiteRT XNNPACK", "litert", {}),
                  "executorch": ("ExecuTorch XNNPACK", "executorch", {}),
                  "torch": ("torch.compile (.pt2)", "torch", {"compile": True})}


def speed_rows(run: Path, threads: list[int], batch: int = 32, seconds: float = 0.5) -> list[dict]:
    """Measure every artefact of every model of the run at each thread count (see module docstring)."""
    cfg = BenchConfig(warmup=10, warmup_seconds=0.1, min_iters=20, max_iters=2000, max_seconds=seconds,
                      time_cap=max(10.0, 4 * seconds), batch_sizes=(batch,), throughput_min_iters=3,
                      throughput_max_seconds=seconds)
    out = []
    for model_dir in sorted(p for p in (run / "artefacts").glob("*") if p.is_dir()):
        model = model_dir.name
        arts = {}
        ckpt = run / "models" / f"{model}.pt"
        if ckpt.is_file():
            arts[("checkpoint", "fp32")] = ckpt
        for meta_path in sorted(model_dir.glob("*/meta.json")):
            fmt, _, prec = meta_path.parent.name.partition("-")
            if fmt in SPEED_RUNTIMES and prec in ("fp32", "int8"):
                arts[(fmt, prec)] = meta_path.parent
        x = None
        for (fmt, prec), path in sorted(arts.items(), key=lambda kv: (list(SPEED_RUNTIMES).index(kv[0][0]), kv[0][1])):
            label, runtime, options = SPEED_RUNTIMES[fmt]
            rt = None
            for t in threads:
                row = {"model": model, "format": fmt, "precision": prec, "runtime": label, "threads": t}
                try:
                    if rt is None or runtime != "torch":  # torch: one process-wide pool, set below (no recompile)
                        rt = runtimes.load(path, runtime=runtime, device="cpu", threads=t, **options)
                    if runtime == "torch":
                        torch.set_num_threads(t)
                except (runtimes.RuntimeUnavailable, runtimes.ArtefactError) as exc:
                    out.append({**row, "skipped": str(exc)})
                    break
                if x is None:
                    x = _bench_inputs(run, rt, batch)
                r = benchmark(rt.predict, x, cfg)
                tp = r["throughput"][0]
                out.append({**row, "bs1_ms": r["latency_ms"]["p50"], "n": r["latency_ms"]["n"],
                            # torch's pool is process-wide (set above), other backends size their own
                            "bs1_threads": (rt.bs1_threads or t) if rt.threaded else t,
                            "batch": tp["batch"], "images_per_s": tp["images_per_s"]})
    index = {(r["model"], r["format"], r["precision"], r["threads"]): r for r in out if "bs1_ms" in r}
    for r in out:
        if "bs1_ms" not in r:
            continue
        same = index.get((r["model"], r["format"], "fp32", r["threads"]))
        eager = index.get((r["model"], "checkpoint", "fp32", r["threads"]))
        for key, base in (("fp32", same), ("eager", eager)):
            r[f"x_{key}_bs1"] = base["bs1_ms"] / r["bs1_ms"] if base else None
            r[f"x_{key}_batch"] = r["images_per_s"] / base["images_per_s"] if base else None
    return out


def _bench_inputs(run: Path, rt, batch: int):
    """Real faces of the run's test split (preprocessed as the artefact says), else random inputs."""
    try:
        test = load_splits(run / "data", ("test",))["test"]
        return rt.preprocess(test.images[:max(batch, 64)])
    except (FileNotFoundError, ValueError, KeyError):
        return np.random.default_rng(0).standard_normal((max(batch, 64), *rt.input_shape)).astype(np.float32)


def speed_table(rs: list[dict]) -> str:
    head = ["model", "runtime", "precision", "threads", "bs1 ms (threads used)", "×fp32 same runtime",
            "×torch eager fp32", "img/s (batch)", "×fp32 same runtime", "×torch eager fp32"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    x = lambda v: f"{v:.2f}x" if isinstance(v, float) else "–"  # noqa: E731
    for r in rs:
        if "bs1_ms" not in r:
            lines.append(f"| {r['model']} | {r['runtime']} | {r['precision']} | {r['threads']} | skipped: "
                         f"{r['skipped']} | | | | | |")
            continue
        used = f" ({r['bs1_threads']})" if r.get("bs1_threads", r["threads"]) != r["threads"] else ""
        lines.append(f"| {r['model']} | {r['runtime']} | {r['precision']} | {r['threads']} | {r['bs1_ms']:.3f}{used} | "
                     f"{x(r['x_fp32_bs1'])} | {x(r['x_eager_bs1'])} | {r['images_per_s']:,.0f} ({r['batch']}) | "
                     f"{x(r['x_fp32_batch'])} | {x(r['x_eager_batch'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vitedge.benchmarks.compression", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=Path("results") / "default", help="a workflow run folder")
    p.add_argument("--split", default="test", choices=["val", "test", "none"],
                   help="split re-measured here through the runtimes; none: only the quantiser's val figures "
                        "(the workflow's report has every artefact's test accuracy)")
    p.add_argument("--md", type=Path, help="also write the table here")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="thread counts for the per-runtime speed table (capped at this host's cores)")
    p.add_argument("--batch", type=int, default=32, help="the batch of the throughput columns")
    p.add_argument("--bench-seconds", type=float, default=0.5, help="timing budget per measurement")
    p.add_argument("--no-speed", action="store_true", help="only the quantiser's figures (no measurement here)")
    p.add_argument("--json", type=Path, help="also write the speed rows here")
    args = p.parse_args(argv)
    rs = rows(args.run, args.split)
    if not rs:
        print(f"no int8 artefacts under {args.run}/artefacts (run `snakemake --cores 2 all` first)", file=sys.stderr)
        return 1
    threads = {r["threads"] for r in rs if r["threads"]}
    text = "\n".join([
        f"# fp32 vs int8 per format ({args.run})", "",
        table(rs, args.split), "",
        "val: the quantiser's gate (fp32 = the PyTorch checkpoint); "
        + (f"{args.split}: re-measured here through vitedge.runtimes (– where the format does not run here)."
         if args.split != "none" else "Test accuracy of every artefact: the run's report (validation matrix)."),
        f"Latency: the format's runtime, fp32 and int8 timed back to back by the quantiser, "
        f"{'/'.join(map(str, sorted(threads))) or '?'} thread(s); torch int8 under torch.compile, "
        "executorch at batch 1 (larger batches image by image).",
        f"Machine: {describe()}", ""])
    if not args.no_speed:
        threads = sorted({max(1, min(t, available_cores())) for t in args.threads})
        speed = speed_rows(args.run, threads, args.batch, args.bench_seconds)
        text += "\n".join([
            "## What a user gains: every artefact vs fp32 of its runtime and vs torch eager fp32", "",
            speed_table(speed), "",
            f"Measured here through vitedge.runtimes, one artefact after another: batch 1 p50 and batch {args.batch} "
            f"images/s, {'/'.join(map(str, threads))} intra-op thread(s) allowed (threads); a batch-1 time in brackets ran on the "
            "fewer threads its artefact was measured fastest with on this CPU (meta.json `bs1_threads`, measured by "
            "the quantiser); ×: speed-up (> 1 faster). LiteRT and "
            "ExecuTorch artefacts have a fixed batch of 1 (batches run image by image). Load average at the start: "
            f"{_load()}.", ""])
        if args.json:
            write_json(args.json, {"rows": speed, "threads": threads, "batch": args.batch, "machine": describe()})
    print(text)
    if args.md:
        atomic_write_text(args.md, text)
    return 0


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    except (AttributeError, OSError):
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
