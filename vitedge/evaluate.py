"""Score any model artefact on a dataset split: the command behind every accuracy vitedge reports.

    python -m vitedge.evaluate --model vitedge/assets/model --data ../shared/datasets/fer2013/fer2013.zip --split test
    python -m vitedge.evaluate --model results/fer2013/artefacts/student/onnx-int8 --data results/fer2013/data --json

`--data` is a data folder written by `python -m vitedge.data` (has manifest.json), a FER-2013 zip,
folder or CSV, or "synthetic". The model runs through `vitedge.runtimes`, so the number is the
artefact's own, not its PyTorch source's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from vitedge import runtimes
from vitedge.batching import batch_slices
from vitedge.data import CLASSES, DatasetError, Split, load_source, load_splits
from vitedge.metrics import classification_metrics


def load_split(data: str, split: str, seed: int = 0) -> Split:
    path = Path(data)
    if (path / "manifest.json").is_file():
        return load_splits(path, (split,))[split]
    splits, _ = load_source(data, seed=seed)
    if split not in splits:
        raise DatasetError(f"{data} has no '{split}' split")
    return splits[split]


def predict_split(rt: runtimes.Runtime, split: Split, batch_size: int = 256, flip_tta: bool = False,
                  progress: bool = True) -> np.ndarray:
    """Logits for every image of `split`, preprocessed exactly as the artefact's metadata says.

    `flip_tta` averages the logits of each face and its mirror image (faces are left-right symmetric
    in expression, so this is a cheap, label-preserving second view)."""
    out = []
    for part in tqdm(list(batch_slices(len(split), batch_size)), desc="evaluating", disable=not progress, leave=False):
        x = rt.preprocess(split.images[part])
        logits = rt.predict(x)
        if flip_tta:
            logits = (logits + rt.predict(np.ascontiguousarray(x[..., ::-1]))) / 2
        out.append(logits)
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)), np.float32)


def evaluate_artefact(model: str, data: str, split: str = "test", runtime: str = "auto", device: str = "cpu",
                      batch_size: int = 256, flip_tta: bool = False, threads: int | None = None) -> dict:
    rt = runtimes.load(model, runtime=runtime, device=device, threads=threads)
    sp = load_split(data, split)
    metrics = classification_metrics(predict_split(rt, sp, batch_size, flip_tta), sp.labels, rt.classes)
    return {"model": str(model), "data": str(data), "split": split, "flip_tta": flip_tta, "runtime": rt.info(),
            **metrics}


def format_table(result: dict) -> str:
    lines = [f"{result['model']} on {result['data']} [{result['split']}], runtime {result['runtime']['runtime']}"
             f"{' + flip TTA' if result['flip_tta'] else ''}",
             f"top-1 {100 * result['top1']:.2f}%   macro-F1 {100 * result['macro_f1']:.2f}%   n={result['n']}",
             "", f"{'class':<10}{'precision':>10}{'recall':>8}{'F1':>8}{'support':>9}"]
    for name, m in result["per_class"].items():
        lines.append(f"{name:<10}{m['precision']:>10.3f}{m['recall']:>8.3f}{m['f1']:>8.3f}{m['support']:>9}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vitedge.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="artefact dir, model file, vitedge .pt, or a model folder")
    p.add_argument("--data", required=True, help="data folder with manifest.json, FER-2013 zip/folder/CSV, or 'synthetic'")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--runtime", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--flip-tta", action="store_true", help="average with the mirrored face")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = p.parse_args(argv)
    try:
        result = evaluate_artefact(args.model, args.data, args.split, args.runtime, args.device, args.batch_size,
                                   args.flip_tta, args.threads)
    except (DatasetError, runtimes.ArtefactError, runtimes.RuntimeUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unreadable data file or model
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
