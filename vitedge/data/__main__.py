"""`python -m vitedge.data --source SRC --out DIR`: decode a data source once into the split cache.

SRC is `synthetic`, the FER-2013 Kaggle zip, its extracted folder or fer2013.csv. Writes
`DIR/{train,val,test}.npz`, `DIR/manifest.json` and the data card `DIR/datacard.{json,md}`
(vitedge.data.datacard), then prints counts per split and class.

When the card finds the training split unlike the evaluation data (blurred, contrast-
stretched, resampled, leaking into test ...) each warning is printed to stderr under a
banner, and the stage still succeeds: a broken copy of FER-2013 once trained for weeks
unnoticed, so this must be hard to miss, but a known quirk must not block work.
`--strict` makes any warning an error instead: one `error:` line, status 2, and the folder
holds only the card (any earlier splits are removed: nothing there looks complete or loads).
A dataset problem, an unreadable source or an unwritable --out prints one `error:` line and
exits with status 2.

The folder is written whole: everything goes to a temporary folder beside --out, which is renamed
into place at the end, so a kill at any moment leaves the old folder or the new one, never a mix.
"""
from __future__ import annotations

import argparse
import logging
import sys

from pathlib import Path

from vitedge.data import CLASSES, SPLITS, DatasetError, load_source, save_splits
from vitedge.data.splits import check_data_folder
from vitedge.io import atomic_path
from vitedge.data.datacard import make_datacard, write_datacard

BANNER = "!" * 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitedge.data", description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="'synthetic', fer2013.zip, its extracted folder or fer2013.csv")
    parser.add_argument("--out", required=True, help="output folder for <split>.npz and manifest.json")
    parser.add_argument("--per-class", type=int, default=200, help="synthetic only: training images per class")
    parser.add_argument("--seed", type=int, default=0, help="seed for synthetic data and for any split carved here")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="files only: share of each class carved from train when val/test are missing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--strict", action="store_true",
                        help="fail (status 2) when the data card has warnings, instead of printing them")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        check_data_folder(args.out)
        splits, report = load_source(
            args.source, seed=args.seed, per_class=args.per_class, val_fraction=args.val_fraction,
            progress=not args.no_progress,
        )
        card = make_datacard(splits, report)
        warnings = card["warnings"]
        strict_fail = args.strict and bool(warnings)
        with atomic_path(args.out, suffix=".tmp") as tmp:  # the whole folder, renamed into place at the end
            tmp.mkdir()
            if not strict_fail:  # --strict failing: the card only, the splits are not to be used
                save_splits(tmp, splits, source=report)
            write_datacard(tmp, card)
        md = Path(args.out) / "datacard.md"
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # --out under a file, in /proc, on a full disk ...
        print(f"error: cannot write {args.out}: {exc.strerror or exc}"
              f"{f' ({exc.filename})' if getattr(exc, 'filename', None) else ''}", file=sys.stderr)
        return 2
    if strict_fail:
        checks = "; ".join(w["message"] for w in warnings)
        print(f"error: data card: {len(warnings)} warning(s) and --strict, splits not written: {checks} "
              f"(details: {md})", file=sys.stderr)
        return 2

    width = max(len(c) for c in CLASSES)
    print(f"{report['kind']} -> {args.out}: {sum(len(s) for s in splits.values())} images, {report['skipped']} skipped")
    print(f"{'split':<6} {'total':>6}  " + " ".join(f"{c:>{width}}" for c in CLASSES))
    for name in SPLITS:
        sp = splits[name]
        print(f"{name:<6} {len(sp):>6}  " + " ".join(f"{n:>{width}}" for n in sp.counts()))
    print(f"data card: {len(warnings) or 'no'} warning(s) -> {md}")
    if warnings:
        _shout(warnings, md)
    return 0


def _shout(warnings: list[dict], md: Path) -> None:
    """Print the card's warnings to stderr so that nobody scrolls past them."""
    lines = [BANNER, *(f"WARNING: data card: [{w['check']}] {w['message']}" for w in warnings),
             "WARNING: data card: training or evaluating on this data will give misleading results; "
             f"fix the data or read {md} before trusting any number (--strict makes this an error)", BANNER]
    print("\n".join(lines), file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
