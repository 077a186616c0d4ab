"""`python -m vitedge.data --source SRC --out DIR`: decode a data source once into the split cache.

SRC is `synthetic`, the FER-2013 Kaggle zip, its extracted folder or fer2013.csv. Writes
`DIR/{train,val,test}.npz` and `DIR/manifest.json`, then prints counts per split and class.
A dataset problem prints one `error:` line and exits with status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys

from vitedge.data import CLASSES, SPLITS, DatasetError, load_source, save_splits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitedge.data", description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="'synthetic', fer2013.zip, its extracted folder or fer2013.csv")
    parser.add_argument("--out", required=True, help="output folder for <split>.npz and manifest.json")
    parser.add_argument("--per-class", type=int, default=200, help="synthetic only: training images per class")
    parser.add_argument("--seed", type=int, default=0, help="seed for synthetic data and for any split carved here")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="files only: share of each class carved from train when val/test are missing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        splits, report = load_source(
            args.source, seed=args.seed, per_class=args.per_class, val_fraction=args.val_fraction,
            progress=not args.no_progress,
        )
        save_splits(args.out, splits, source=report)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    width = max(len(c) for c in CLASSES)
    print(f"{report['kind']} -> {args.out}: {sum(len(s) for s in splits.values())} images, {report['skipped']} skipped")
    print(f"{'split':<6} {'total':>6}  " + " ".join(f"{c:>{width}}" for c in CLASSES))
    for name in SPLITS:
        sp = splits[name]
        print(f"{name:<6} {len(sp):>6}  " + " ".join(f"{n:>{width}}" for n in sp.counts()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
