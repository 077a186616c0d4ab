"""`python -m vitedge.finetune`: supervised fine-tuning on FER (the stage command; the engine is
`vitedge.engine`, the argument handling shared by the stages is `vitedge.stages`)."""
from __future__ import annotations

import argparse

from vitedge.stages import add_common_args, begin_stage, build_stage_model, finish_stage, preprocess_for, resolve, run_cli
from vitedge.engine import TrainConfig, fit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vitedge.finetune", description="Supervised fine-tuning on FER.")
    add_common_args(p)
    p.add_argument("--init", help="checkpoint to start from (vitedge, torchvision or timm weights)")
    args = resolve(p.parse_args(argv), TrainConfig)

    def run() -> None:
        d, splits = begin_stage(args)
        model = build_stage_model(args.model_spec, args.init)
        pre = preprocess_for(model, args.model_spec)
        result = fit(model, splits["train"], splits["val"], pre, args.stage_config, args.work_dir, resume=args.resume,
                     stage=args.stage, meta={"init": args.init, "data": str(args.data)}, dist_env=d)
        if d.main:
            finish_stage(args, result, splits, pre)

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
