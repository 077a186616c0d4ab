"""The prepared GPU command (issue 22): a stronger teacher and the hybrid-tiny student on long schedules,
in one call of the lent GPU machine, with the `gpu` validation target for both.

    python benchmarks/gpu_carry.py                                      # here, once: .carry/ (data, wheels)
    # on the GPU machine, carry [".carry"], timeout_s 600:
    PYTHONPATH=. python benchmarks/gpu_run.py --out $OUT --minutes 9
    python benchmarks/gpu_run.py --smoke --out /tmp/gpu-smoke           # the same path on the CPU, tiny

What it does, all with vitedge's own pieces (docs/gpu.md says what to do with what comes back):

1. reads FER-2013's Training images from the carried pack (`vitedge.data.load_fer2013`, which
   carves two stratified, seeded slices out of Training: `val`, on which every stage keeps its
   best epoch, and `test`, a check slice nothing is chosen on: the validation rows use it);
2. picks the teacher by what the time allows: each candidate (`--teachers`, strongest first) runs
   a short probe (`vitedge.engine.fit`, a few steps), and the first whose measured speed gives at
   least `--min-epochs` epochs in the teacher's share of the time is trained;
3. trains the teacher (`fit`: AdamW, warm-up then cosine, bf16 autocast, batches gathered and
   augmented on the GPU), then distils the student from it (`vitedge.distill.distill`, DeiT hard
   distillation). Each stage's epoch count is fixed from the measured time of its second epoch (the
   first is cold) before the cosine part of the schedule starts: epochs 1 and 2 run inside the
   warm-up, whose learning rates do not depend on the epoch count, and the stage then resumes to
   the count the remaining time allows (at most `--max-epochs`). The choice is recorded in the
   stage summary (`gpu_run.plan`);
4. runs the `gpu` validation target (runtimes/gpu.yaml: torch eager fp32 / fp16 / bf16 and
   torch.compile fp16) for both models on the check slice;
5. writes to --out, as each is ready: teacher.pt, teacher.json, student.pt, student.json (the
   workflow's stage summaries, plus "plan"), validation-student-gpu.json,
   validation-teacher-gpu.json and gpu_run.log: 7 files (the machine returns 8 at most, 16 MiB each).

It needs only what that machine has (torch 2.11, numpy, Pillow, PyYAML, tqdm, OpenCV); a module it
lacks is installed from the carried wheels in .carry/wheels, if any, into a folder put on sys.path.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import logging
import os
import shutil
import subprocess
import sys
import time
import zipfile
from argparse import Namespace
from dataclasses import asdict
from pathlib import Path

T0 = time.monotonic()  # the budget counts from here (python's own start-up is a second or two before)
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CARRY = REPO / ".carry"
PACK = CARRY / "fer2013-train.npz"
WHEELS = CARRY / "wheels"
# top-level modules the training and validation path imports beyond the standard library
NEEDED = ("numpy", "torch", "PIL", "yaml", "tqdm", "cv2")
MAX_FILE = 15.5 * 2**20  # the machine returns files of 16 MiB at most: a teacher must fit in fp32
TEACHERS = ("resnet18-half-48", "resnet18-half-s2-48", "cnn-small-48")
STUDENT = {"arch": "vit", "preset": "hybrid-tiny-48", "overrides": {"distilled": True, "drop_path_rate": 0.1}}


def ensure_modules(needed: tuple[str, ...] = NEEDED, wheels: Path = WHEELS, target: Path = Path("/tmp/gpu_run_site")
                   ) -> list[str]:
    """Install carried wheels when a needed module is missing (a bare GPU machine); returns what was missing."""
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing and sorted(wheels.glob("*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", str(target), *map(str, sorted(wheels.glob("*.whl")))], check=True)
        sys.path.insert(0, str(target))
        importlib.invalidate_caches()
    still = [m for m in missing if importlib.util.find_spec(m) is None]
    if still:
        raise SystemExit(f"error: python modules missing here: {', '.join(still)} (carry their wheels in {wheels}: "
                         "python benchmarks/gpu_carry.py --wheels NAME ...)")
    return missing


MISSING = ensure_modules()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from vitedge import checkpoints  # noqa: E402
from vitedge.stages import finish_stage  # noqa: E402
from vitedge.data import CLASSES, Split, load_fer2013, make_synthetic, save_splits  # noqa: E402
from vitedge.data.fer2013 import pack_images  # noqa: E402
from vitedge.distill import DistillConfig, distill, load_teacher  # noqa: E402
from vitedge.io import read_json, sha256_file, write_json  # noqa: E402
from vitedge.model import create_model  # noqa: E402
from vitedge.preprocess import Preprocess  # noqa: E402
from vitedge.sysinfo import describe, machine_info  # noqa: E402
from vitedge.engine import TrainConfig, fit, seed_everything  # noqa: E402
from vitedge.validate import format_row, validate  # noqa: E402
from vitedge.validation_rows import ValidationResult  # noqa: E402


class Tee:
    """stdout/stderr to the terminal and to the log file that comes back with the results."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, s: str) -> int:
        if "\r" in s:  # progress-bar redraws (the engine's bars are on for the main process): epochs are logged
            return len(s)
        self.stream.write(s)
        self.log.write(s)
        self.log.flush()
        return len(s)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str):  # fileno, isatty, encoding ...: the terminal's
        return getattr(self.stream, name)


def say(msg: str) -> None:
    print(f"[gpu_run {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def parse_args(argv: list[str] | None = None) -> Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=os.environ.get("OUT"), help="where results go (default: $OUT)")
    p.add_argument("--data", type=Path, help=f"FER-2013 Training pack or zip (default: {PACK.relative_to(REPO)})")
    p.add_argument("--work", type=Path, default=Path("/tmp/gpu_run_work"), help="resumable states (not returned)")
    p.add_argument("--minutes", type=float, default=9.0, help="wall-clock budget of the whole command")
    p.add_argument("--validate-reserve", type=float, default=90.0, help="seconds kept for the validation at the end")
    p.add_argument("--margin", type=float, default=15.0, help="seconds kept free at the very end")
    p.add_argument("--teacher-share", type=float, default=0.55, help="the teacher's share of the training time")
    p.add_argument("--teachers", nargs="+", default=list(TEACHERS), help="candidates, strongest first")
    p.add_argument("--min-epochs", type=int, default=200, help="a candidate teacher must get this many epochs")
    p.add_argument("--max-epochs", type=int, default=300, help="no stage runs more epochs than this")
    p.add_argument("--probe-steps", type=int, default=20, help="steps per probe epoch (two epochs per candidate)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--teacher", type=Path,
                   help="a trained teacher checkpoint (e.g. a previous run's teacher.pt, carried in .carry/): "
                        "no teacher stage, all the training time goes to the student")
    p.add_argument("--student-init", type=Path,
                   help="start the student from these weights (e.g. the shipped vitedge/assets/model/student.pt): "
                        "a further cycle of distillation from a stronger teacher instead of a start from scratch")
    p.add_argument("--student-lr", type=float, default=0.002, help="the student's peak lr for a batch of 256")
    p.add_argument("--student-batch", type=int, help="the student's batch (default --batch-size); the lr scales with it")
    p.add_argument("--distillation", choices=("hard", "soft"), default="hard",
                   help="hard: the teacher's argmax (DeiT's best); soft: KL at --tau (measured: docs/gpu.md)")
    p.add_argument("--tau", type=float, default=1.0, help="the soft term's temperature")
    p.add_argument("--alpha", type=float, default=0.5, help="the distillation term's weight")
    p.add_argument("--holdout", type=float, default=0.05,
                   help="fraction of each class carved out of Training for selection (val) and again for the check (test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="the same path on the CPU: synthetic faces, 2 steps an epoch")
    args = p.parse_args(argv)
    if args.out is None:
        p.error("--out is required when $OUT is not set")
    if args.max_epochs < 2:
        p.error("--max-epochs must be at least 2 (two epochs are timed before the schedule is fixed)")
    if args.smoke:
        args.batch_size, args.probe_steps, args.max_epochs, args.min_epochs = 16, 1, 2, 1
        args.validate_reserve, args.margin = min(args.validate_reserve, 10.0), min(args.margin, 5.0)
    return args


# --------------------------------------------------------------------------- data
def synthetic_pack(dest: Path, per_class: int = 12, seed: int = 0) -> Path:
    """A tiny pack in FER-2013's layout from the embedded synthetic faces (for --smoke): JPEGs in a zip, packed."""
    train = make_synthetic(per_class=per_class, seed=seed)["train"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    zip_path = dest.with_suffix(".zip")
    with zipfile.ZipFile(zip_path, "w") as zf:
        for i, (img, label) in enumerate(zip(train.images, train.labels)):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=92)
            zf.writestr(f"train/{CLASSES[label]}/Training_{i}.jpg", buf.getvalue())
    pack_images(zip_path, dest, "train/")
    return dest


def load_data(args: Namespace) -> tuple[dict[str, Split], dict, Path]:
    """(splits, the reader's report, a data folder with the check slice as its test split for validation)."""
    source = args.data or (synthetic_pack(args.work / "synthetic-train.npz") if args.smoke else PACK)
    if not Path(source).exists():
        raise SystemExit(f"error: {source} not found: run `python benchmarks/gpu_carry.py` first and carry .carry/")
    splits, report = load_fer2013(source, val_fraction=args.holdout, seed=args.seed, progress=False)
    check_dir = args.work / "check-data"
    # only `test` is read by validation; train and val hold the same slice to keep the folder small
    save_splits(check_dir, {"train": splits["test"], "val": splits["test"], "test": splits["test"]},
                {"kind": "gpu_run check slice", "from": report, "note": "train/val/test all = the check slice"})
    say(f"data {source}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return splits, report, check_dir


# --------------------------------------------------------------------------- stages
def setup_device(args: Namespace) -> torch.device:
    if args.smoke:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU visible to torch; the CPU path is --smoke")
    torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN picks its fastest kernels once
    torch.set_float32_matmul_precision("high")  # TF32 where anything still runs in fp32
    torch.backends.cudnn.allow_tf32 = True
    return torch.device("cuda")


def teacher_config(args: Namespace, epochs: int, steps: int = 0) -> TrainConfig:
    """fer2013-gpu.yaml's teacher schedule: AdamW peak 4e-3 at batch 256, 5 warm-up epochs, strong augmentation."""
    return TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=0.004, warmup_epochs=2 if args.smoke else 5,
                       label_smoothing=0.1, class_balance="none", augment="strong", seed=args.seed,
                       deterministic=False, max_steps_per_epoch=steps or (2 if args.smoke else 0),
                       eval_batch_size=1024, state_every=50)


def student_config(args: Namespace, epochs: int) -> DistillConfig:
    """fer2013-gpu.yaml's distillation by default (hard, alpha 0.5, peak 2e-3 at batch 256, 10 warm-up
    epochs); --distillation/--tau/--alpha/--student-lr/--student-batch change it."""
    # a continued student warms up for 3 epochs (epochs 1-2, the timed ones, must stay inside the warm-up)
    warmup = 2 if args.smoke else 3 if args.student_init else 10
    return DistillConfig(epochs=epochs, batch_size=args.student_batch or args.batch_size, lr=args.student_lr,
                         warmup_epochs=warmup,
                         label_smoothing=0.1, class_balance="none", augment="strong", seed=args.seed,
                         deterministic=False, max_steps_per_epoch=2 if args.smoke else 0, eval_batch_size=1024,
                         state_every=50, distillation_type=args.distillation, alpha=args.alpha, tau=args.tau)


def build(spec: dict, seed: int, device: torch.device) -> torch.nn.Module:
    seed_everything(seed, deterministic=False)
    model = create_model(spec["preset"], **spec.get("overrides", {}))
    if spec.get("arch") == "cnn" and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # cuDNN's fast layout for bf16 convolutions
    return model


def probe(spec: dict, splits: dict[str, Split], pre: Preprocess, args: Namespace, device: torch.device) -> dict:
    """Seconds an epoch of `spec` would take as the teacher: two short epochs of `fit` (the second one warm)."""
    model = build(spec, args.seed, device)
    work = args.work / f"probe-{spec['preset']}"
    shutil.rmtree(work, ignore_errors=True)
    t = time.monotonic()
    result = fit(model, splits["train"], splits["val"], pre, teacher_config(args, 2, args.probe_steps), work,
                 stage="probe")
    wall = time.monotonic() - t
    warm = result["history"][-1]  # the second epoch: cuDNN has chosen its kernels
    steps = len(splits["train"]) // args.batch_size
    epoch_s = steps * args.batch_size / warm["img_per_s"] + warm["eval_s"] + 0.02  # + a checkpoint save
    return {"preset": spec["preset"], "params": model.num_params(), "img_per_s": warm["img_per_s"],
            "epoch_s_estimate": round(epoch_s, 3), "probe_s": round(wall, 2)}


def choose_teacher(splits: dict[str, Split], pre: Preprocess, args: Namespace, device: torch.device,
                   budget_s: float) -> tuple[dict, list[dict]]:
    """The first candidate whose probed speed gives --min-epochs in `budget_s` (else the last one tried)."""
    probes: list[dict] = []
    for preset in args.teachers:
        spec = {"arch": "cnn", "preset": preset, "overrides": {}}
        size = create_model(preset).num_params() * 4
        if size > MAX_FILE:
            probes.append({"preset": preset, "skipped": f"fp32 checkpoint {size / 2**20:.1f} MiB > the 16 MiB returned"})
            continue
        p = probe(spec, splits, pre, args, device)
        p["epochs_in_budget"] = int(budget_s / p["epoch_s_estimate"])
        probes.append(p)
        say(f"probe {preset}: {p['img_per_s']:.0f} img/s, ~{p['epoch_s_estimate']:.2f} s an epoch, "
            f"{p['epochs_in_budget']} epochs in {budget_s:.0f} s")
        if p["epochs_in_budget"] >= args.min_epochs:
            return spec, probes
    tried = [p for p in probes if "skipped" not in p]
    if not tried:
        raise SystemExit("error: no teacher candidate fits the returned file size")
    return {"arch": "cnn", "preset": tried[-1]["preset"], "overrides": {}}, probes


def timed_stage(run, deadline: float, args: Namespace, name: str) -> tuple[dict, dict]:
    """`run(epochs, resume)` -> fit's result. Epochs 1 (cold: cuDNN's autotuning, first allocations) and 2
    (warm, timed) run inside the warm-up, whose learning rates do not depend on the epoch count; the count
    the remaining time allows is then fixed and the stage resumed to it, so the cosine part is planned whole."""
    t = time.monotonic()
    run(1, False)
    t2 = time.monotonic()
    result = run(2, True)
    wall2 = time.monotonic() - t2
    warm = result["history"][-1]
    per_epoch = (warm["epoch_s"] + warm["eval_s"]) * 1.05 + 0.02  # + best-checkpoint saves, state every 50
    call_overhead = max(0.0, wall2 - warm["epoch_s"] - warm["eval_s"])  # resuming: data to the device, state
    left = deadline - time.monotonic()
    epochs = max(2, min(args.max_epochs, 2 + int((left - call_overhead) / per_epoch)))
    plan = {"first_epoch_wall_s": round(t2 - t, 3), "warm_epoch_s": warm["epoch_s"], "warm_eval_s": warm["eval_s"],
            "epoch_estimate_s": round(per_epoch, 3), "resume_overhead_s": round(call_overhead, 2),
            "seconds_left": round(left, 1), "max_epochs": args.max_epochs, "epochs": epochs,
            "budget_s": round(deadline - t, 1)}
    say(f"{name}: warm epoch {warm['epoch_s']:.2f} s + {warm['eval_s']:.2f} s evaluation; {left:.0f} s left "
        f"-> {epochs} epochs")
    if epochs > 2:
        result = run(epochs, True)
    plan["train_wall_s"] = round(time.monotonic() - t, 1)
    return result, plan


def finish(out: Path, stage: str, spec: dict, cfg: TrainConfig, result: dict, splits: dict[str, Split],
           pre: Preprocess, extra: dict, teacher: Path | None = None, init: Path | None = None) -> None:
    """The workflow's own stage summary (`vitedge.stages.finish_stage`: best checkpoint to `out`, <out>.json), plus
    how this run planned its time and where it ran."""
    args = Namespace(out=out, stage=stage, model_spec=spec, stage_config=cfg, init=str(init) if init else None,
                     teacher=[teacher] if teacher else None)
    finish_stage(args, result, splits, pre)
    summary = read_json(out.with_suffix(".json"))
    summary["gpu_run"] = {**extra, "machine": describe(machine_info()), "torch": torch.__version__}
    write_json(out.with_suffix(".json"), summary)


# --------------------------------------------------------------------------- the run
def train_teacher(args: Namespace, splits: dict[str, Split], pre: Preprocess, device: torch.device,
                  train_deadline: float) -> Path:
    budget = (train_deadline - time.monotonic()) * args.teacher_share
    spec, probes = choose_teacher(splits, pre, args, device, budget)
    deadline = time.monotonic() + budget - sum(p.get("probe_s", 0) for p in probes)
    model = build(spec, args.seed, device)
    work = args.work / "teacher"
    shutil.rmtree(work, ignore_errors=True)
    cfgs: dict[int, TrainConfig] = {}

    def run(epochs: int, resume: bool) -> dict:
        cfgs[epochs] = teacher_config(args, epochs)
        return fit(model, splits["train"], splits["val"], pre, cfgs[epochs], work, resume=resume, stage="finetune",
                   meta={"data": "FER-2013 Training minus the held-out slices (benchmarks/gpu_run.py)"})

    result, plan = timed_stage(run, deadline, args, f"teacher {spec['preset']}")
    out = args.out / "teacher.pt"
    finish(out, "finetune", spec, cfgs[plan["epochs"]], result, splits, pre, {"plan": plan, "probes": probes})
    say(f"teacher -> {out} (best epoch {result['best']['epoch']}, val top-1 {result['best']['val_top1']:.4f})")
    return out


def train_student(args: Namespace, splits: dict[str, Split], pre: Preprocess, device: torch.device,
                  teacher_path: Path, deadline: float) -> Path:
    teacher, teacher_pre, _ = load_teacher(teacher_path)
    teacher = teacher.to(device)
    if device.type == "cuda":
        teacher = teacher.to(memory_format=torch.channels_last)
    spec = STUDENT
    if args.student_init:  # the shape and regularisation it was trained with, so its weights load as they are
        config = checkpoints.read_checkpoint(args.student_init)["config"]
        spec = {**STUDENT, "overrides": {**STUDENT["overrides"], "drop_path_rate": config["drop_path_rate"]}}
    student = build(spec, args.seed, device)
    if args.student_init:
        checkpoints.import_pretrained(str(args.student_init), student)
    work = args.work / "student"
    shutil.rmtree(work, ignore_errors=True)
    sha = sha256_file(teacher_path)
    init = args.student_init.name if args.student_init else None
    cfgs: dict[int, DistillConfig] = {}

    def run(epochs: int, resume: bool) -> dict:
        cfgs[epochs] = student_config(args, epochs)
        return distill(student, teacher, splits["train"], splits["val"], pre, cfgs[epochs], work, teacher_pre,
                       resume=resume, teacher_sha256=sha, meta={"teacher": teacher_path.name, "init": init,
                                            "data": "FER-2013 Training minus the held-out slices"})

    result, plan = timed_stage(run, deadline, args, f"student {spec['preset']}")
    out = args.out / "student.pt"
    finish(out, "distill", spec, cfgs[plan["epochs"]], result, splits, pre, {"plan": plan}, teacher=teacher_path,
           init=args.student_init)
    say(f"student -> {out} (best epoch {result['best']['epoch']}, val top-1 {result['best']['val_top1']:.4f})")
    return out


def validate_gpu(args: Namespace, check_dir: Path, deadline: float) -> None:
    """The `gpu` target for the student, then the teacher while time is left (else a file that says so)."""
    bench = {"max_seconds": 0.5, "throughput_max_seconds": 0.3, "time_cap": 5.0}  # leave time for torch.compile
    for model in ("student", "teacher"):
        dest = args.out / f"validation-{model}-gpu.json"
        if model == "teacher" and args.teacher:
            continue  # a given teacher's rows were measured by the run that trained it
        left = deadline - time.monotonic()
        if model == "teacher" and left < args.validate_reserve / 3:
            late = ValidationResult(model=model, format="checkpoint", precision="fp32", target="gpu",
                                    reason=f"out of time: {left:.0f} s left of the run's budget")
            write_json(dest, late.to_dict())
            continue
        ckpt = args.out / f"{model}.pt"
        result = validate(ckpt, ckpt, "gpu", check_dir, bench=bench)
        result.model = model
        result.data_note = "the check slice: FER-2013 Training images held out of training and of selection"
        write_json(dest, result.to_dict())
        for row in result.rows:
            say(format_row(result, row))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    log = open(args.out / "gpu_run.log", "a", encoding="utf-8")
    sys.stdout, sys.stderr = Tee(sys.__stdout__, log), Tee(sys.__stderr__, log)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    end = T0 + args.minutes * 60 - args.margin
    device = setup_device(args)
    say(f"{describe(machine_info())}; torch {torch.__version__}; device {device}; budget {args.minutes} min"
        + (f"; installed from wheels: {', '.join(MISSING)}" if MISSING else ""))
    args.work.mkdir(parents=True, exist_ok=True)
    splits, _, check_dir = load_data(args)
    pre = Preprocess(img_size=48)
    train_deadline = end - args.validate_reserve
    teacher = args.teacher or train_teacher(args, splits, pre, device, train_deadline)
    train_student(args, splits, pre, device, teacher, train_deadline)
    validate_gpu(args, check_dir, end)
    say(f"done: {', '.join(sorted(p.name for p in args.out.iterdir()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
