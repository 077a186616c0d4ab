"""Data sources for vitedge: FER-2013 (Kaggle zip, folder or CSV) and a synthetic stand-in.

Every source yields the same thing: `{"train", "val", "test"} -> Split` plus a report dict
describing where the data came from. `python -m vitedge.data` writes them to the on-disk
cache (`save_splits`) that all later stages read (`load_splits`).
"""
from __future__ import annotations

from pathlib import Path

from vitedge.data.fer2013 import load_fer2013
from vitedge.data.splits import CLASSES, SPLITS, DatasetError, Split, load_splits, save_splits
from vitedge.data.synthetic import make_synthetic

__all__ = [
    "CLASSES",
    "SPLITS",
    "Split",
    "DatasetError",
    "save_splits",
    "load_splits",
    "load_fer2013",
    "make_synthetic",
    "load_source",
]

SYNTHETIC = "synthetic"


def load_source(
    source: str,
    *,
    seed: int = 0,
    per_class: int = 200,
    val_fraction: float = 0.1,
    progress: bool = True,
) -> tuple[dict[str, Split], dict]:
    """Load `"synthetic"` or a FER-2013 path (zip, extracted folder or fer2013.csv).

    `per_class` applies to synthetic data only, `val_fraction` and `progress` to files
    only, so callers can pass one configuration whatever the source.
    """
    if source == SYNTHETIC:
        splits = make_synthetic(per_class=per_class, seed=seed)
        report = {
            "kind": SYNTHETIC,
            "seed": seed,
            "per_class": per_class,
            "counts": {name: dict(zip(CLASSES, sp.counts())) for name, sp in splits.items()},
            "skipped": 0,
            "skipped_examples": [],
        }
        return splits, report
    if not Path(source).exists():
        raise DatasetError(
            f"data source {source!r} does not exist; give '{SYNTHETIC}', the FER-2013 Kaggle zip "
            "(e.g. ../shared/datasets/fer2013/fer2013.zip), its extracted folder, or fer2013.csv"
        )
    return load_fer2013(source, val_fraction=val_fraction, seed=seed, progress=progress)
