"""`python -m vitedge.pretrain`: pretrain the teacher's encoder (MAE on the training faces, supervised
on an image folder, or an imported checkpoint). The stage command; the methods are `vitedge.pretrain`."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from vitedge import checkpoints
from vitedge.stages import add_common_args, begin_stage, build_stage_model, preprocess_for, resolve, run_cli
from vitedge.data import CLASSES, Split
from vitedge.io import atomic_path, write_json
from vitedge.preprocess import Preprocess
from vitedge.pretrain import METHODS, PretrainConfig, pretrain_mae, pretrain_supervised
from vitedge.engine import Dist


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vitedge.pretrain", description="Pretrain the teacher's encoder.")
    add_common_args(p, default_stage="pretrain")
    p.add_argument("--method", choices=METHODS)
    p.add_argument("--source", help="image folder (supervised) or checkpoint (import)")
    args = resolve(p.parse_args(argv), PretrainConfig)
    cfg: PretrainConfig = args.stage_config
    cfg.method = args.method or cfg.method
    cfg.source = args.source or cfg.source
    if cfg.method not in METHODS:
        p.error(f"--method must be one of {', '.join(METHODS)}")
    return args


def pretrain(model: nn.Module, splits: dict[str, Split], pre: Preprocess, args: argparse.Namespace, d: Dist
             ) -> tuple[Path | None, dict[str, Any]]:
    """Run the configured method on `model` (in place): (checkpoint to copy to --out or None to save
    `model` itself, what to record)."""
    cfg: PretrainConfig = args.stage_config
    record: dict[str, Any] = {}
    if cfg.method == "mae":
        result = pretrain_mae(model, splits, pre, cfg, args.work_dir, args.resume, d)
        return Path(result["best_path"]), {"best": result["best"], "history": result["history"]}
    if cfg.method == "supervised":
        result = pretrain_supervised(model, pre, cfg, args.work_dir, args.resume, d)
        checkpoints.import_pretrained(result["best_path"], model)  # keep the encoder, the FER head stays fresh
        record = {"best": result["best"], "history": result["history"]}
    elif cfg.method == "import":
        if not cfg.source:
            raise ValueError("pretrain.method 'import' needs pretrain.source: a checkpoint file")
        checkpoints.import_pretrained(cfg.source, model)
        record = {"source": cfg.source}
    return None, record


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg: PretrainConfig = args.stage_config

    def run() -> None:
        d, splits = begin_stage(args)
        model = build_stage_model(args.model_spec)
        pre = preprocess_for(model, args.model_spec)
        best_path, record = pretrain(model, splits, pre, args, d)
        if not d.main:
            return
        if best_path is None:
            checkpoints.save_model(args.out, model, pre, list(CLASSES), {"stage": "pretrain", "method": cfg.method})
        else:
            with atomic_path(args.out) as tmp:
                shutil.copyfile(best_path, tmp)
        write_json(args.out.with_suffix(".json"), {"method": cfg.method, "model": args.model_spec,
                                                  "params": model.num_params(), **record})
        print(f"pretrain ({cfg.method}) -> {args.out}")

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
