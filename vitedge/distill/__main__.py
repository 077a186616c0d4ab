"""`python -m vitedge.distill`: DeiT distillation of a student from a fine-tuned teacher (the stage
command; the distillation itself is `vitedge.distill`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from vitedge import checkpoints
from vitedge.stages import add_common_args, begin_stage, build_stage_model, finish_stage, preprocess_for, resolve, run_cli
from vitedge.distill import DistillConfig, distill, load_teacher, write_report
from vitedge.io import sha256_file
from vitedge.losses import DISTILLATION_TYPES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vitedge.distill", description="DeiT distillation of a student ViT.")
    add_common_args(p, default_stage="distill")
    p.add_argument("--teacher", required=True, type=Path, nargs="+",
                   help="vitedge checkpoint of the (fine-tuned) teacher; several teach as an ensemble")
    p.add_argument("--init", help="checkpoint to start the student from (default: random, as in DeiT)")
    p.add_argument("--distillation-type", choices=DISTILLATION_TYPES)
    p.add_argument("--alpha", type=float)
    p.add_argument("--tau", type=float)
    p.add_argument("--report", type=Path, help="write the teacher-vs-student table here (Markdown + .json)")
    args = resolve(p.parse_args(argv), DistillConfig)
    for key in ("distillation_type", "alpha", "tau"):
        if getattr(args, key) is not None:
            setattr(args.stage_config, key, getattr(args, key))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg: DistillConfig = args.stage_config

    def run() -> None:
        d, splits = begin_stage(args)  # seeded before the teacher and the student are built
        teacher, teacher_pre, _ = load_teacher(args.teacher)
        teacher_meta = [str(t) for t in args.teacher] if len(args.teacher) > 1 else str(args.teacher[0])
        student = build_stage_model(args.model_spec, args.init)
        pre = preprocess_for(student, args.model_spec)
        result = distill(student, teacher.to(d.device), splits["train"], splits["val"], pre, cfg, args.work_dir,
                         teacher_pre, resume=args.resume, dist_env=d,
                         teacher_sha256=",".join(sha256_file(t) for t in args.teacher),
                         meta={"teacher": teacher_meta, "init": args.init, "data": str(args.data)})
        if d.main:
            finish_stage(args, result, splits, pre)
            if args.report:
                best, _ = checkpoints.load_model(args.out)
                write_report(args.report, teacher.cpu(), best, splits, teacher_pre, pre, cfg)
                print(f"distill: report -> {args.report}")

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
