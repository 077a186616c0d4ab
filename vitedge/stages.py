"""What the training-stage commands (pretrain, finetune, distill) share: arguments, the model and its
preprocessing, data, finishing up. It is glue on top of the engine (`vitedge.engine`): the stage
commands (`python -m vitedge.<stage>`) import it; the engine and the stages' own modules never do.

Every stage takes the same shape of command, so a Snakemake rule is one line:

    python -m vitedge.<stage> --data DATA_DIR --out MODEL.pt \
        --model-json '{"preset": "vit-tiny-48"}' --train-json '{"epochs": 30}' [--resume]

Values in --train-json / --model-json come from the workflow config; the short flags
(--epochs, --preset ...) are for people typing the command.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from torch import nn

from vitedge import checkpoints
from vitedge.cnn import PRESETS as CNN_PRESETS
from vitedge.data import DatasetError, Split, load_splits
from vitedge.data.datacard import warn_from_datacard
from vitedge.io import atomic_path, sha256_file, write_json
from vitedge.model import create_model
from vitedge.preprocess import Preprocess
from vitedge.engine import Dist, evaluate, seed_everything, setup_distributed

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def add_common_args(p: argparse.ArgumentParser, default_stage: str = "finetune") -> None:
    p.add_argument("--data", required=True, type=Path, help="folder written by `python -m vitedge.data`")
    p.add_argument("--out", required=True, type=Path, help="where the final model checkpoint goes")
    p.add_argument("--work-dir", type=Path, help="resumable state and logs (default: <out>.work/)")
    p.add_argument("--model-json", default="{}", help='model spec, e.g. {"preset": "vit-tiny-48", "overrides": {...}}')
    p.add_argument("--train-json", default="{}", help="training options (see TrainConfig)")
    p.add_argument("--preset", help="model preset (overrides --model-json)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--stage", default=default_stage, help="name used in logs and metadata")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --work-dir")


def resolve(args: argparse.Namespace, config_cls: type) -> argparse.Namespace:
    """Merge JSON specs and short flags into `args.model_spec` and `args.stage_config`."""
    model_spec = json.loads(args.model_json)
    if args.preset:
        model_spec["preset"] = args.preset
    model_spec.setdefault("preset", "vit-tiny-48")
    _check_arch(model_spec)
    train = json.loads(args.train_json)
    for key in ("epochs", "batch_size", "lr", "seed"):
        if getattr(args, key) is not None:
            train[key] = getattr(args, key)
    args.model_spec = model_spec
    args.stage_config = config_cls.from_dict(train)
    args.work_dir = args.work_dir or args.out.with_name(args.out.name + ".work")
    return args


def _check_arch(model_spec: dict) -> None:
    """`arch` says which model family a preset must come from: a CNN preset under arch vit (or the
    reverse) is a config mistake, not something to guess around."""
    arch = model_spec.get("arch", "vit")
    is_cnn = model_spec["preset"] in CNN_PRESETS
    if arch not in ("vit", "cnn") or (arch == "cnn") != is_cnn:
        raise ValueError(f"model preset {model_spec['preset']!r} does not match arch {arch!r} "
                         f"(cnn presets: {', '.join(CNN_PRESETS)}; every other preset is a vit)")


def begin_stage(args: argparse.Namespace) -> tuple[Dist, dict[str, Split]]:
    """What every stage does first: the process group, the seed (before any model is built: its
    initial weights draw from it), and the data. Returns (distributed env, splits)."""
    d = setup_distributed(args.device)
    cfg = args.stage_config
    seed_everything(cfg.seed, cfg.deterministic, cfg.threads)
    return d, load_stage_data(args.data)


def load_stage_data(data_dir: Path) -> dict[str, Split]:
    splits = load_splits(data_dir)
    warn_from_datacard(data_dir)  # a training split unlike the test data is said again, before training
    return splits


def build_stage_model(model_spec: dict, init: str | None = None) -> nn.Module:
    """The model a stage trains, built once from its spec (seed first: see `train.seed_everything`),
    optionally starting from `init` (vitedge, torchvision or timm weights)."""
    model = create_model(model_spec["preset"], **model_spec.get("overrides", {}))
    if init:
        checkpoints.import_pretrained(init, model)
    return model


def preprocess_for(model: nn.Module, model_spec: dict) -> Preprocess:
    """The preprocessing a model takes: its input size comes from its own config (as timm keeps input
    size and normalisation beside each model); the spec's `preprocess` may set mean/std/resize."""
    return Preprocess(img_size=model.cfg.img_size, **model_spec.get("preprocess", {}))


def finish_stage(args: argparse.Namespace, result: dict, splits: dict[str, Split], pre: Preprocess) -> dict:
    """Copy the best checkpoint to --out (atomically) and write <out>.json with its scores.

    The test split is scored for the record only; the model was chosen on validation.
    """
    model, info = checkpoints.load_model(result["best_path"])
    scores = {name: evaluate(model, splits[name], pre) for name in ("val", "test")}
    with atomic_path(args.out) as tmp:
        shutil.copyfile(result["best_path"], tmp)
    summary = {
        "stage": args.stage, "checkpoint": str(args.out), "model": args.model_spec,
        "params": model.num_params(), "best_epoch": result["best"]["epoch"],
        "train_config": asdict(args.stage_config),
        "val": _brief(scores["val"]), "test": _brief(scores["test"]), "history": result["history"],
        "init": checkpoint_record(getattr(args, "init", None)),
    }
    teachers = getattr(args, "teacher", None)
    if teachers:  # distillation: which teacher (or ensemble, a list) taught this run, and how it was trained
        records = [checkpoint_record(t) for t in teachers]
        summary["teacher"] = records[0] if len(records) == 1 else records
    write_json(args.out.with_suffix(".json"), summary)
    print(f"{args.stage}: best epoch {summary['best_epoch']}, val top-1 {scores['val']['top1']:.4f}, "
          f"test top-1 {scores['test']['top1']:.4f} -> {args.out}")
    return summary


def checkpoint_record(checkpoint: str | Path | None) -> dict | None:
    """A checkpoint a stage started from (`--init`) or learnt from (`--teacher`): its path, its hash
    and, when there is one, the summary its own stage wrote beside it (<checkpoint>.json). A model
    trained as a chain of runs (a schedule continued with a new cosine cycle, each cycle taught by
    the teacher of its day) so keeps every run's config, curve and teacher on record."""
    if not checkpoint:
        return None
    path = Path(checkpoint)
    record: dict[str, Any] = {"checkpoint": str(path), "sha256": sha256_file(path)}
    summary = path.with_suffix(".json")
    if summary.is_file():
        record["summary"] = json.loads(summary.read_text())
    return record


def _brief(m: dict) -> dict:
    return {k: m[k] for k in ("n", "top1", "macro_f1", "confusion")}


def run_cli(fn: Callable[[], Any]) -> int:
    """Run a stage: clear one-line errors instead of tracebacks for the mistakes users make."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        fn()
    except KeyboardInterrupt:
        print("interrupted: the last completed epoch is saved; rerun with --resume to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (DatasetError, ValueError) as exc:  # CheckpointError and ArtefactError are ValueErrors too
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # a missing or unreadable file, an unwritable --out or --work-dir, a full disk
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR
    return 0
