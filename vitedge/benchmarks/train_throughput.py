"""Training throughput per preset: the model step alone vs the full input path + step. A script, not a test.

    python -m vitedge.benchmarks.train_throughput [--presets hybrid-micro-48 cnn-small-48 ...] [--batch 128]
        [--steps 12] [--threads 2] [--augment strong] [--md reports/train_throughput.md]
    python -m vitedge.benchmarks.train_throughput --levers --presets cnn-small-48 hybrid-tiny-48   # CPU training levers
    python -m vitedge.benchmarks.train_throughput --distill-batches 64 128 --presets hybrid-tiny-48 \
        --teacher cnn-small-48                                                                   # distillation step

`--levers`: the model-only step of each preset as it trains today (eager, NCHW) against
`channels_last` memory format and `torch.compile` (Inductor, CPU), alone and together, and bf16
autocast on channels_last; compile time is reported apart from the steady rate.

`--distill-batches`: the distillation stage's whole step per batch size (the student's forward,
backward and AdamW plus the frozen `--teacher`'s forward and DeiT's hard loss, channels_last as
`fer2013.yaml` trains), so a smaller batch's extra optimiser steps are priced in images per second;
`--precisions fp32 bf16` prices bf16 autocast (`amp: bf16`) against fp32 too. bf16 pays on a CPU only
with native bf16 instructions (avx512_bf16, AMX); the table's machine line lists them.

"model-only" is forward + backward + AdamW on one batch already in memory as a float tensor;
"full loop" is what `vitedge.engine.run_loop` does per step: take the next batch of the uint8
in-memory split (`InMemoryBatches`), augment it whole (`BatchAugment`), then the same step.
The ratio says whether the input path keeps up with the model (target: >= 90% on 2 cores).
Images are synthetic faces at 48x48: throughput does not depend on what the pixels show.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vitedge.cnn import create_cnn
from vitedge.data import make_synthetic
from vitedge.data.augment import BatchAugment, InMemoryBatches
from vitedge.engine import SupervisedLoss, TrainConfig, autocast, param_groups
from vitedge.io import atomic_write_text
from vitedge.losses import DistillationLoss
from vitedge.model import create_model
from vitedge.preprocess import Preprocess
from vitedge.sysinfo import describe, machine_info

DEFAULT_PRESETS = ["vit-nano-48", "vit-micro-48", "vit-tiny-48", "hybrid-micro-48", "hybrid-tiny-48",
                   "cnn-tiny-48", "cnn-small-48"]


def images_per_second(step, batches, steps: int, warmup: int = 3) -> float:
    """Median-free, honest wall-clock rate over `steps` steps after `warmup` untimed ones."""
    it = iter(batches)
    for _ in range(warmup):
        step(*next(it))
    t0, n = time.perf_counter(), 0
    for _ in range(steps):
        x, y = next(it)
        step(x, y)
        n += len(y)
    return n / (time.perf_counter() - t0)


def train_step(forward, opt: torch.optim.Optimizer, criterion=None, bf16: bool = False):
    """One step, then AdamW: `criterion(images, outputs, labels)` (the engine's contract) when given,
    else cross-entropy on every head the model returns. `bf16`: the forward and the loss under bf16
    autocast, as the engine runs `amp: bf16` (weights and AdamW stay fp32)."""
    amp = TrainConfig(amp="bf16" if bf16 else "off")

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with autocast(amp, x.device):  # the engine's own switch
            out = forward(x)
            if criterion is not None:
                loss = criterion(x, out, y)
            else:
                loss = sum(F.cross_entropy(o, y) for o in (out if isinstance(out, tuple) else (out,)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def measure(preset: str, batch: int, steps: int, augment: str, train_split) -> dict:
    torch.manual_seed(0)
    model = create_model(preset, **({"distilled": True} if preset.startswith(("vit-", "hybrid-")) else {})).train()
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3)
    pre = Preprocess(img_size=model.cfg.img_size)

    step = train_step(model, opt)
    batches = InMemoryBatches(train_split, pre, batch, seed=0)
    aug, g = BatchAugment(pre, augment), torch.Generator().manual_seed(0)
    fixed = (aug(batches.images[:batch], g), batches.labels[:batch])

    def forever_fixed():
        while True:
            yield fixed

    def forever_loop():
        e = 0
        while True:
            for x, y in batches.epoch(e):
                yield aug(x, g), y
            e += 1

    model_only = images_per_second(step, forever_fixed(), steps)
    full = images_per_second(step, forever_loop(), steps)
    model_only_again = images_per_second(step, forever_fixed(), steps)  # the machine may drift: bracket it
    ref = max(model_only, model_only_again)
    return {"preset": preset, "params": sum(p.numel() for p in model.parameters()), "model_only": ref,
            "full_loop": full, "ratio": full / ref}


# (name, channels_last, torch.compile, bf16 autocast)
LEVERS = [("eager", False, False, False), ("channels_last", True, False, False), ("torch.compile", False, True, False),
          ("channels_last + compile", True, True, False), ("channels_last + bf16", True, False, True)]


def measure_levers(preset: str, batch: int, steps: int, augment: str, train_split) -> list[dict]:
    """Model-only img/s of one preset per lever (same weights, batch and augmented images)."""
    pre = Preprocess(img_size=48)
    batches = InMemoryBatches(train_split, pre, batch, seed=0)
    x0 = BatchAugment(pre, augment)(batches.images[:batch], torch.Generator().manual_seed(0))
    y0 = batches.labels[:batch]
    rows = []
    for name, channels_last, compiled, bf16 in LEVERS:
        torch.manual_seed(0)
        model = create_model(preset, **({"distilled": True} if preset.startswith(("vit-", "hybrid-")) else {})).train()
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        x = x0.contiguous(memory_format=fmt)
        opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3)
        step = train_step(torch.compile(model) if compiled else model, opt, bf16=bf16)

        t0 = time.perf_counter()
        step(x, y0)  # the first step compiles
        first = time.perf_counter() - t0

        def forever():
            while True:
                yield x, y0

        rate = images_per_second(step, forever(), steps)
        rows.append({"preset": preset, "lever": name, "img_s": rate, "first_step_s": first})
        print(f"{preset:>16} {name:>24}: {rate:7.1f} img/s (first step {first:.1f} s)", flush=True)
    return rows


def measure_distill_batches(preset: str, teacher_preset: str, batch_sizes: list[int], steps: int, augment: str,
                            train_split, precisions: tuple[str, ...] = ("fp32",)) -> list[dict]:
    """img/s of the whole hard-distillation step (student + frozen teacher, channels_last) per
    precision (fp32, or bf16 autocast over both models' forwards) and batch size."""
    pre = Preprocess(img_size=48)
    teacher = create_cnn(teacher_preset).eval().to(memory_format=torch.channels_last)
    rows = []
    for precision, batch in [(p, b) for p in precisions for b in batch_sizes]:
        torch.manual_seed(0)
        student = create_model(preset, distilled=True).train().to(memory_format=torch.channels_last)
        criterion = DistillationLoss(SupervisedLoss(label_smoothing=0.1), teacher, "hard", 0.5)  # the stage's loss
        step = train_step(student, torch.optim.AdamW(param_groups(student, 0.05), lr=1e-3), criterion,
                          bf16=precision == "bf16")
        batches = InMemoryBatches(train_split, pre, batch, seed=0)
        x = BatchAugment(pre, augment)(batches.images[:batch], torch.Generator().manual_seed(0))
        x, y = x.contiguous(memory_format=torch.channels_last), batches.labels[:batch]

        def forever():
            while True:
                yield x, y

        # the same number of images per batch size, so each rate averages over as much work
        rate = images_per_second(step, forever(), max(1, steps * max(batch_sizes) // batch))
        rows.append({"preset": preset, "teacher": teacher_preset, "precision": precision, "batch": batch, "img_s": rate})
        print(f"{preset:>16} <- {teacher_preset}, {precision}, batch {batch:4d}: {rate:7.1f} img/s", flush=True)
    return rows


def distill_lines(rows: list[dict], args: argparse.Namespace) -> list[str]:
    # the reference: each student's first precision at its largest batch (rows come in ascending batch)
    first = {}
    for r in rows:
        first.setdefault(r["preset"], r["precision"])
    ref = {r["preset"]: r for r in rows if r["precision"] == first[r["preset"]]}
    return [f"Distillation step (student fwd+bwd+AdamW, teacher fwd, hard loss, channels_last, {args.threads} "
            f"threads, {args.steps} timed steps at the largest batch) on {describe(machine_info())}", "",
            "| student | teacher | precision | batch | img/s | vs the reference |", "|---|---|---|---:|---:|---:|",
            *[f"| {r['preset']} | {r['teacher']} | {r['precision']} | {r['batch']} | {r['img_s']:.1f} | "
              f"{r['img_s'] / ref[r['preset']]['img_s']:.2f}x |" for r in rows],
            "", "Reference: each student's first precision at the largest batch. bf16: autocast over both "
            "models' forwards and the loss (weights and AdamW in fp32), as the engine runs `amp: bf16`."]


def lever_lines(rows: list[dict], args: argparse.Namespace) -> list[str]:
    base = {r["preset"]: r["img_s"] for r in rows if r["lever"] == "eager"}
    return [f"Training levers, model-only step (fp32 unless the lever says bf16, batch {args.batch}, "
            f"{args.threads} threads, {args.steps} timed steps) on {describe(machine_info())}", "",
            "| preset | lever | img/s | vs eager | first step s (compile) |", "|---|---|---:|---:|---:|",
            *[f"| {r['preset']} | {r['lever']} | {r['img_s']:.1f} | {r['img_s'] / base[r['preset']]:.2f}x | "
              f"{r['first_step_s']:.1f} |" for r in rows]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vitedge.benchmarks.train_throughput", description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=DEFAULT_PRESETS)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--augment", default="strong", choices=["none", "light", "strong"])
    p.add_argument("--md", type=Path, help="also write the table here (Markdown)")
    p.add_argument("--levers", action="store_true", help="channels_last and torch.compile against eager")
    p.add_argument("--distill-batches", type=int, nargs="+", metavar="B",
                   help="the distillation step's img/s at these batch sizes (largest last is the reference)")
    p.add_argument("--teacher", default="cnn-small-48", help="the frozen teacher for --distill-batches")
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                   help="--distill-batches: fp32 and/or bf16 autocast (the first is the reference)")
    args = p.parse_args(argv)
    args.threads = min(args.threads, os.cpu_count() or 1)  # snakemake may grant more threads than cores
    torch.set_num_threads(args.threads)
    largest = max(args.distill_batches or [args.batch])
    train = make_synthetic(per_class=max(64, largest * 3 // 7 + 8), seed=0)["train"]

    if args.distill_batches:
        sizes = sorted(args.distill_batches)
        lines = distill_lines([r for preset in args.presets for r in measure_distill_batches(
            preset, args.teacher, sizes, args.steps, args.augment, train, tuple(args.precisions))], args)
        print("\n".join(lines))
        if args.md:
            atomic_write_text(args.md, "\n".join(lines) + "\n")
        return 0
    if args.levers:
        lines = lever_lines([r for preset in args.presets
                             for r in measure_levers(preset, args.batch, args.steps, args.augment, train)], args)
        print("\n".join(lines))
        if args.md:
            atomic_write_text(args.md, "\n".join(lines) + "\n")
        return 0
    rows = []
    for preset in args.presets:
        r = measure(preset, args.batch, args.steps, args.augment, train)
        rows.append(r)
        print(f"{preset:>16}: model-only {r['model_only']:7.1f} img/s, full loop {r['full_loop']:7.1f} img/s "
              f"({100 * r['ratio']:.0f}%)", flush=True)
    lines = [
        f"Training throughput (fp32, batch {args.batch}, {args.threads} threads, augment {args.augment}, "
        f"{args.steps} timed steps) on {describe(machine_info())}",
        "",
        "| preset | params | model-only img/s | full loop img/s | full / model-only |",
        "|---|---:|---:|---:|---:|",
        *[f"| {r['preset']} | {r['params'] / 1e6:.2f}M | {r['model_only']:.1f} | {r['full_loop']:.1f} | "
          f"{100 * r['ratio']:.0f}% |" for r in rows],
    ]
    print("\n".join(lines))
    if args.md:
        atomic_write_text(args.md, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
