"""Learning curves on FER-2013 for the same CPU time: which model learns most per second here. A script, not a test.

    python benchmarks/learning_curves.py --data results/fer2013/data --minutes 5 \
        [--candidates vit hybrid cnn distilled] [--runs results/fer2013] [--out reports/learning_curves]

Each candidate is trained by the real engine (`vitedge.engine.fit`: in-memory batches, strong batch
augmentation, AdamW, warm-up + cosine) for the same wall-clock budget: its training rate is measured
first, and its schedule (steps, hence the cosine) is sized to fill the budget. PublicTest (the `val`
split) top-1 is measured at 8 points along the way; the curve's time axis is training time only
(evaluation excluded), cumulative.

- vit: the paper's ViT, linear patch stem (vit-tiny-48, patch 6)
- hybrid: the conv-stem ViT (hybrid-tiny-48), labels only
- cnn: the convnet teacher (cnn-small-48)
- distilled: hybrid-tiny-48 with a distillation token, taught by the `cnn` candidate's best checkpoint
  (so `cnn` must run first); its line starts at the teacher's training time, which it needed.
- hybrid-seq, distilled-seq: the same two with CCT's sequence pooling instead of the class token.

`--teacher CKPT` teaches the distilled candidates with a given checkpoint (e.g. a workflow run's
`models/teacher.pt`) instead of the `cnn` candidate's; their lines then start at 0. With a longer
`--minutes` this compares student variants as the FER config trains them (several epochs each).

`--runs RUN_DIR[=LABEL] ...` adds the curves of finished workflow runs (teacher and student, from their
stage summaries or `metrics.jsonl`; the teacher is the one that taught the student's last cycle,
as its summary records it), so the long schedule of `snakemake ... --configfile workflow/config/fer2013.yaml`
sits on the same axes; LABEL (default: the folder's name) tells apart runs of one config made in
different checkouts. Runs added before stay in `<out>.json` (and the plot) until `--fresh` or a run
of the same label replaces them, so a run whose folder is gone is still drawn.
Writes `<out>.png` (the plot), `<out>.md` (table) and `<out>.json`.
"""
from __future__ import annotations

import argparse
import json
import textwrap
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from vitedge import checkpoints  # noqa: E402
from vitedge.data import load_splits  # noqa: E402
from vitedge.distill import DistillConfig, distill  # noqa: E402
from vitedge.io import atomic_write_text, write_json  # noqa: E402
from vitedge.model import create_model  # noqa: E402
from vitedge.preprocess import Preprocess  # noqa: E402
from vitedge.sysinfo import describe, machine_info  # noqa: E402
from vitedge.engine import TrainConfig, fit, seed_everything  # noqa: E402

CANDIDATES = {
    "vit": ("vit-tiny-48", {"patch_size": 6}, 0.001),
    "hybrid": ("hybrid-tiny-48", {}, 0.002),
    "cnn": ("cnn-small-48", {}, 0.004),
    "distilled": ("hybrid-tiny-48", {"distilled": True}, 0.002),
    # CCT's sequence pooling instead of the class token (ViTConfig.pool)
    "hybrid-seq": ("hybrid-tiny-48", {"pool": "seq"}, 0.002),
    "distilled-seq": ("hybrid-tiny-48", {"distilled": True, "pool": "seq"}, 0.002),
}
LABELS = {
    "vit": "ViT, patch stem (vit-tiny-48/6)",
    "hybrid": "hybrid ViT (hybrid-tiny-48)",
    "cnn": "CNN (cnn-small-48)",
    "distilled": "hybrid ViT distilled",
    "hybrid-seq": "hybrid ViT, sequence pooling",
    "distilled-seq": "hybrid ViT, sequence pooling, distilled",
}
CNN_TEACHER = " from the CNN (after its teacher)"  # what a distilled label says when the cnn candidate taught it
POINTS = 8  # evaluations along each curve
BATCH = 128


def measure_rate(model: torch.nn.Module, splits, pre: Preprocess, teacher: torch.nn.Module | None, steps: int = 12) -> float:
    """Training images per second of one candidate (full loop, as `fit` runs it), a few steps."""
    with tempfile.TemporaryDirectory(prefix="vitedge-lc-rate-") as tmp:  # the probe's checkpoints are not kept
        work = Path(tmp)
        cfg = TrainConfig(epochs=1, batch_size=BATCH, max_steps_per_epoch=steps, augment="strong", warmup_epochs=0)
        probe = create_model(model.cfg)
        if teacher is None:
            result = fit(probe, splits["train"], splits["val"].subset(torch.arange(8).numpy()), pre, cfg, work)
        else:
            dcfg = DistillConfig(**{**cfg.__dict__, "distillation_type": "hard"})
            result = distill(probe, teacher, splits["train"], splits["val"].subset(torch.arange(8).numpy()), pre, dcfg, work)
        return result["history"][-1]["img_per_s"]


def train_candidate(name: str, splits, budget_s: float, out_dir: Path, teacher_path: Path | None) -> dict:
    preset, overrides, lr = CANDIDATES[name]
    seed_everything(0)
    model = create_model(preset, **overrides)
    pre = Preprocess(img_size=model.cfg.img_size)
    teacher = checkpoints.load_model(teacher_path)[0] if teacher_path else None
    rate = measure_rate(model, splits, pre, teacher)
    steps = max(POINTS, int(rate * budget_s / BATCH))
    common = dict(epochs=POINTS, max_steps_per_epoch=steps // POINTS, batch_size=BATCH, lr=lr * 256 / BATCH,
                  warmup_epochs=0.5, augment="strong", class_balance="none", label_smoothing=0.1)
    work = out_dir / f"{name}.work"
    print(f"{name}: {preset} {overrides}, {rate:.0f} img/s -> {steps} steps of {BATCH} in {budget_s:.0f} s", flush=True)
    if teacher is None:
        result = fit(model, splits["train"], splits["val"], pre, TrainConfig(**common), work, stage=name)
    else:
        result = distill(model, teacher, splits["train"], splits["val"], pre,
                         DistillConfig(**common, distillation_type="hard"), work)
    return {"name": LABELS[name], "preset": preset, "overrides": overrides, "params": sum(p.numel() for p in model.parameters()),
            "img_per_s": rate, "curve": curve_of(result["history"]), "best_path": result["best_path"]}


def curve_of(history: list[dict], offset_s: float = 0.0) -> list[tuple[float, float]]:
    t, points = offset_s, []
    for h in history:
        t += h["epoch_s"]
        points.append((round(t, 1), h["val_top1"]))
    return points


def stage_history(summary: dict) -> list[dict]:
    """A stage's epochs, after those of the runs it was warm-started from (its `init` chain: a
    schedule continued with a new cosine cycle keeps the earlier run's summary there)."""
    earlier = (summary.get("init") or {}).get("summary") or {}
    return (stage_history(earlier) if "history" in earlier else []) + summary.get("history", [])


def last_cycle_teacher(student_summary: Path) -> dict | None:
    """The summary of the teacher that taught the student's last cycle (it may have been trained
    outside the workflow, e.g. a continued teacher), with its own `init` chain; of an ensemble, the
    member with the longest chain. None when the student's summary does not record one."""
    if not student_summary.is_file():
        return None
    record = json.loads(student_summary.read_text()).get("teacher")
    records = record if isinstance(record, list) else [record] if record else []
    summaries = [r["summary"] for r in records if "history" in (r.get("summary") or {})]
    return max(summaries, key=lambda s: len(stage_history(s)), default=None)


def parse_run(spec: str) -> tuple[Path, str]:
    """`results/fer2013=one-go` -> (Path("results/fer2013"), "one-go"); without `=LABEL` the label
    is the folder's name."""
    path, _, label = spec.partition("=")
    return Path(path), label or Path(path).name


def run_curves(run_dir: Path, label: str | None = None) -> list[dict]:
    """The teacher's and the student's curves of a finished (or running) workflow run: from the stage
    summaries (`models/<name>.json`, with every run of a continued schedule), else from a running
    stage's `metrics.jsonl`. The student's line starts where its teacher's ends."""
    rows, offset = [], 0.0
    last_teacher = last_cycle_teacher(run_dir / "models" / "student.json")
    for stage, ckpt in (("teacher", "teacher.pt"), ("student", "student.pt")):
        summary = run_dir / "models" / Path(ckpt).with_suffix(".json").name
        log = run_dir / "models" / f"{ckpt}.work" / "metrics.jsonl"
        if stage == "teacher" and last_teacher:
            history = stage_history(last_teacher)
        elif summary.is_file():
            history = stage_history(json.loads(summary.read_text()))
        elif log.is_file():
            history = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        else:
            continue
        curve = curve_of(history, offset if stage == "student" else 0.0)
        rows.append({"name": f"{label or run_dir.name} {stage} (workflow)", "run": label or run_dir.name,
                     "curve": curve})
        offset = curve[-1][0] if stage == "teacher" and curve else offset
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for r in rows:
        xs, ys = zip(*r["curve"]) if r["curve"] else ((), ())
        style = "--" if "(workflow)" in r["name"] else "-"
        ax.plot([x / 60 for x in xs], [100 * y for y in ys], style, marker="o", ms=3, label=r["name"])
    # minutes-long candidates and hours-long workflow runs on one axis: log time keeps both readable
    ax.set_xscale("log")
    ax.set_xlabel("training time on this machine (minutes, log scale)")
    ax.set_ylabel("PublicTest top-1 (%)")
    ax.set_title("\n".join(textwrap.wrap(title, 110)), fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="a data folder written by `python -m vitedge.data` (FER-2013)")
    p.add_argument("--minutes", type=float, default=5.0, help="training budget per candidate")
    p.add_argument("--candidates", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES))
    p.add_argument("--runs", nargs="*", type=parse_run, default=[],
                   help="workflow run folders to add (results/<run>, or results/<run>=LABEL)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("reports/learning_curves"))
    p.add_argument("--fresh", action="store_true", help="retrain candidates already measured in <out>.json")
    p.add_argument("--teacher", type=Path, help="teacher checkpoint for the distilled candidates (default: the cnn candidate's)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    work_dir = args.out.parent / (args.out.name + ".work")

    # candidates measured before (same budget) are read back, so adding a workflow run's curves
    # later does not retrain them
    done: dict[str, dict] = {}
    earlier_runs: list[dict] = []
    if args.out.with_suffix(".json").is_file() and not args.fresh:
        old = json.loads(args.out.with_suffix(".json").read_text())
        if old.get("minutes") == args.minutes:
            done = {r["candidate"]: r for r in old["rows"] if "candidate" in r}
        # a workflow run's curves cost hours and its folder may be gone (another machine): keep them
        earlier_runs = [r for r in old["rows"] if "candidate" not in r]
    rows: list[dict] = []
    if args.candidates:
        splits = load_splits(args.data) if args.data and set(args.candidates) - set(done) else None
        if splits is None and set(args.candidates) - set(done):
            p.error("--data is needed to train candidates")
        teacher_path, teacher_time = args.teacher, 0.0
        for name in args.candidates:
            if name in done:
                rows.append(done[name])
                if name == "cnn" and args.teacher is None:
                    teacher_path, teacher_time = Path(done[name]["best_path"]), done[name]["curve"][-1][0]
                continue
            distilled = name.startswith("distilled")
            if distilled and teacher_path is None:
                p.error(f"the {name} candidate needs a teacher: the cnn candidate first, or --teacher")
            row = train_candidate(name, splits, args.minutes * 60, work_dir, teacher_path if distilled else None)
            row["candidate"] = name
            if name == "cnn" and args.teacher is None:
                teacher_path = Path(row["best_path"])
                teacher_time = row["curve"][-1][0]
            if distilled:  # say which teacher; a given one's line starts at 0 (teacher_time)
                row["teacher"] = str(teacher_path)
                row["name"] += CNN_TEACHER if args.teacher is None else f" (teacher {args.teacher})"
                row["curve"] = [(t + teacher_time, a) for t, a in row["curve"]]
            rows.append(row)
    new_labels = {label for _, label in args.runs}
    rows.extend(r for r in earlier_runs if r.get("run", r["name"].rsplit(" ", 2)[0]) not in new_labels)
    for run_dir, label in args.runs:
        rows.extend(run_curves(run_dir, label))

    machine = describe(machine_info())
    plot(rows, args.out.with_suffix(".png"),
         f"FER-2013 PublicTest top-1 vs training time ({args.minutes:g} min per candidate, {args.threads} "
         f"thread(s); dashed: a workflow run's teacher and student, each with every cycle of its schedule, the "
         f"student after its teacher) on {machine}")
    lines = ["| model | params | train img/s | PublicTest top-1 at the end | best | minutes |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        last = r["curve"][-1] if r["curve"] else (0.0, float("nan"))
        best = max((a for _, a in r["curve"]), default=float("nan"))
        params = f"{r['params'] / 1e6:.2f}M" if "params" in r else "–"
        rate = f"{r['img_per_s']:.0f}" if "img_per_s" in r else "–"
        lines.append(f"| {r['name']} | {params} | {rate} | {100 * last[1]:.2f}% | {100 * best:.2f}% | {last[0] / 60:.1f} |")
    lines += ["", f"Measured with `python benchmarks/learning_curves.py` on {machine}."]
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    write_json(args.out.with_suffix(".json"), {"rows": rows, "machine": machine_info(), "minutes": args.minutes,
                                               "threads": args.threads})
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
