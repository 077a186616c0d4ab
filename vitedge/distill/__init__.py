"""DeiT-style distillation: a small student with a distillation token learns from a frozen teacher.

The student (e.g. vit-micro-48 with `distilled: true`) is trained by the shared engine
(`vitedge.engine.fit`) with `DistillationLoss` (see `vitedge.losses`): cross-entropy with label
smoothing on its class head, the teacher's hard labels (or temperature-softened distribution) on
its distillation head. At inference the model averages both heads; every export computes that.
Several `--teacher` checkpoints teach as one (`TeacherEnsemble`: their mean class probabilities),
the usual way to a better teacher when a longer schedule costs more time than a second model.

    python -m vitedge.distill --data results/default/data --teacher models/teacher.pt \
        --out models/student.pt --model-json '{"preset": "vit-micro-48", "overrides": {"distilled": true}}' \
        --train-json '{"epochs": 8, "distillation_type": "hard"}' --report reports/distill.md [--resume]

`--report` writes a teacher-vs-student table (accuracy on val and test, parameters, counted
FLOPs, CPU latency at batch 1) as Markdown plus the same numbers as JSON beside it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitedge import checkpoints
from vitedge.bench import measure
from vitedge.data import CLASSES, Split
from vitedge.data.datasets import class_weights
from vitedge.io import atomic_write_text, write_json
from vitedge.losses import DistillationLoss, TeacherInput
from vitedge.model import VisionTransformer, flops_per_image
from vitedge.preprocess import Preprocess
from vitedge.sysinfo import describe, machine_info
from vitedge.engine import Dist, SupervisedLoss, TrainConfig, evaluate, fit


@dataclass
class DistillConfig(TrainConfig):
    distillation_type: str = "hard"  # DeiT's best: hard labels from the teacher on the distillation head
    alpha: float = 0.5  # weight of the teacher's term
    tau: float = 1.0  # temperature (soft only)


def distill(student: VisionTransformer, teacher: nn.Module | None, train: Split, val: Split, pre: Preprocess,
            cfg: DistillConfig, work_dir: str | Path, teacher_pre: Preprocess | None = None, resume: bool = False,
            meta: dict | None = None, dist_env: Dist | None = None, teacher_sha256: str = "") -> dict:
    """Train `student` against `teacher` (None with type "none": the no-teacher baseline). Returns `fit`'s summary.

    `teacher_sha256` (the teacher checkpoint's hash, comma-joined for an ensemble) must match for a saved
    state to be resumed, so a retrained teacher restarts distillation instead of resuming a student that
    learnt from the old one; it is kept in the checkpoint's meta."""
    if cfg.distillation_type != "none" and not student.cfg.distilled:
        raise ValueError("the student has no distillation token: set `distilled: true` in its model overrides")
    base = SupervisedLoss(class_weights(train.labels, student.cfg.num_classes, cfg.class_balance), cfg.label_smoothing)
    if cfg.channels_last and teacher is not None:
        teacher.to(memory_format=torch.channels_last)  # its forward is a third of a step with a CNN teacher
    criterion = DistillationLoss(base, teacher, cfg.distillation_type, cfg.alpha, cfg.tau,
                                 TeacherInput(pre, teacher_pre or pre))
    return fit(student, train, val, pre, cfg, work_dir, criterion=criterion, resume=resume, stage="distill",
               meta={**(meta or {}), "distillation": {"type": cfg.distillation_type, "alpha": cfg.alpha, "tau": cfg.tau}},
               dist_env=dist_env, resume_key={"teacher_sha256": teacher_sha256} if teacher_sha256 else None)


class TeacherEnsemble(nn.Module):
    """Frozen teachers that teach as one: the log of their mean class probabilities.

    Averaging probabilities (not logits) keeps each member's confidence on the same scale whatever
    its logit temperature; the log makes the result a logit again, so `argmax` is the ensemble's
    vote (hard distillation) and `softmax(. / tau)` a tempered form of its distribution (soft).
    Members share one input (size, channels, preprocessing: `load_teacher` checks).
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two teachers")
        shapes = {(m.cfg.in_chans, m.cfg.img_size) for m in members}
        if len(shapes) > 1:
            raise ValueError(f"ensemble teachers take different inputs (channels, size): {sorted(shapes)}")
        self.members = nn.ModuleList(members)
        self.cfg = members[0].cfg  # input channels and size, for FLOP counting and latency

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).float().softmax(dim=1) for m in self.members]).mean(dim=0)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()

    def num_params(self) -> int:
        return sum(m.num_params() for m in self.members)


def load_teacher(paths: str | Path | list) -> tuple[nn.Module, Preprocess, dict]:
    """One checkpoint, or several (a `TeacherEnsemble`; they must share their preprocessing)."""
    if isinstance(paths, (str, Path)) or len(paths) == 1:
        path = paths if isinstance(paths, (str, Path)) else paths[0]
        teacher, info = checkpoints.load_model(path)
        if list(info["classes"]) != list(CLASSES):
            raise ValueError(f"teacher {path} predicts {info['classes']}, not the FER classes {list(CLASSES)}")
        return teacher, Preprocess.from_dict(info["preprocess"]), info
    loaded = [load_teacher(p) for p in paths]
    pre = loaded[0][1]
    for path, (_, other, _) in zip(paths[1:], loaded[1:]):
        if other != pre:
            raise ValueError(f"ensemble teacher {path} preprocesses as {other}, {paths[0]} as {pre}: "
                             "ensemble members must share their input")
    return TeacherEnsemble([t for t, _, _ in loaded]), pre, {"members": [info for _, _, info in loaded]}


# --------------------------------------------------------------------------- report
LATENCY_THREADS = 1  # on a shared 2-core host two OpenMP threads stall behind other jobs; one is stable


@torch.inference_mode()
def cpu_latency_ms(model: VisionTransformer, threads: int = LATENCY_THREADS) -> float:
    """Median wall time of one eval forward pass on the CPU, with the shared bench protocol."""
    model = model.eval().cpu()
    x = torch.zeros(1, model.cfg.in_chans, model.cfg.img_size, model.cfg.img_size)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        timing = measure(lambda: model(x), warmup=10, min_iters=30, max_seconds=1.0, time_cap=10.0)
    finally:
        torch.set_num_threads(before)
    return timing.p50 * 1e3


def model_card(model: VisionTransformer, splits: dict[str, Split], pre: Preprocess) -> dict:
    """Accuracy (val, test), size, counted FLOPs and batch-1 CPU latency of one model."""
    scores = {name: evaluate(model, splits[name], pre) for name in ("val", "test")}
    return {
        "preset_config": ([m.cfg.as_dict() for m in model.members] if isinstance(model, TeacherEnsemble)
                          else model.cfg.as_dict()),
        "params": model.num_params(),
        "flops": flops_per_image(model),
        "latency_ms_bs1": cpu_latency_ms(model),
        **{f"{name}_{k}": scores[name][k] for name in scores for k in ("top1", "macro_f1")},
    }


def write_report(path: str | Path, teacher: VisionTransformer, student: VisionTransformer, splits: dict[str, Split],
                 teacher_pre: Preprocess, student_pre: Preprocess, cfg: DistillConfig) -> dict:
    """`path` (Markdown) and `path` with .json: teacher vs student. An ensemble's row "teacher" is the
    ensemble (what the student learnt from); its members follow as "teacher 1", "teacher 2", ..."""
    rows = {"teacher": model_card(teacher, splits, teacher_pre)}
    if isinstance(teacher, TeacherEnsemble):
        rows.update({f"teacher {i}": model_card(m, splits, teacher_pre) for i, m in enumerate(teacher.members, 1)})
    rows["student"] = model_card(student, splits, student_pre)
    t, s = rows["teacher"], rows["student"]
    report: dict[str, Any] = {"distillation": {"type": cfg.distillation_type, "alpha": cfg.alpha, "tau": cfg.tau, "epochs": cfg.epochs},
              "models": rows, "threads": LATENCY_THREADS, "machine": machine_info()}
    lines = [
        f"# Distillation: teacher vs student ({cfg.distillation_type}, alpha {cfg.alpha}"
        + (f", tau {cfg.tau}" if cfg.distillation_type == "soft" else "") + f", {cfg.epochs} epochs)",
        "",
        "| model | params | MFLOPs | CPU bs1 ms | val top-1 | val macro-F1 | test top-1 | test macro-F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {name} | {r['params'] / 1e6:.2f}M | {r['flops'] / 1e6:.1f} | {r['latency_ms_bs1']:.2f} | "
          f"{100 * r['val_top1']:.2f} | {100 * r['val_macro_f1']:.2f} | {100 * r['test_top1']:.2f} | "
          f"{100 * r['test_macro_f1']:.2f} |" for name, r in rows.items()],
        "",
        f"Student/teacher: {s['params'] / t['params']:.2f}x parameters, {s['flops'] / t['flops']:.2f}x FLOPs, "
        f"{s['latency_ms_bs1'] / t['latency_ms_bs1']:.2f}x latency, "
        f"{100 * (s['test_top1'] - t['test_top1']):+.2f} points test top-1.",
        f"Latency: PyTorch eager fp32, batch 1, median (vitedge.bench protocol), {LATENCY_THREADS} thread, "
        f"on {describe(report['machine'])}.",
        "",
    ]
    atomic_write_text(path, "\n".join(lines))
    write_json(Path(path).with_suffix(".json"), report)
    return report
