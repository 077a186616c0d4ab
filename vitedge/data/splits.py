"""In-memory split representation and the on-disk cache that stages hand each other.

FER-2013 is tiny (35,887 images of 48x48 = 83 MB as uint8), so every reader decodes once
into arrays; the `data` rule writes them as `<split>.npz` beside `manifest.json`, and every
later stage reads those instead of re-decoding JPEGs.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vitedge.io import atomic_path, read_json, write_json


# Fixed class order: the original fer2013.csv emotion codes 0..6.
CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SPLITS: tuple[str, ...] = ("train", "val", "test")
# what a data folder holds: `save_splits` and the data card write only these, and a folder holding
# anything else is not replaced as a whole (it may be someone's own folder, given by mistake)
DATA_FILES = frozenset({*(f"{s}.npz" for s in SPLITS), "manifest.json", "datacard.json", "datacard.md"})


class DatasetError(ValueError):
    """A dataset cannot be used as given (missing split, empty class, unsafe archive ...)."""


@dataclass
class Split:
    images: np.ndarray  # (N, H, W) uint8 grayscale
    labels: np.ndarray  # (N,) int64, indices into CLASSES
    paths: list[str] = field(default_factory=list)  # source of each image, for error reports

    def __post_init__(self) -> None:
        self.images = np.ascontiguousarray(self.images, dtype=np.uint8)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.images.ndim != 3 or len(self.images) != len(self.labels):
            raise DatasetError(f"images {self.images.shape} and labels {self.labels.shape} do not match")

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self, num_classes: int = len(CLASSES)) -> list[int]:
        return np.bincount(self.labels, minlength=num_classes).tolist()

    def subset(self, idx: np.ndarray) -> "Split":
        paths = [self.paths[i] for i in idx] if self.paths else []
        return Split(self.images[idx], self.labels[idx], paths)

    def content_hash(self) -> str:
        h = hashlib.sha256()
        h.update(self.images.tobytes())
        h.update(self.labels.tobytes())
        return h.hexdigest()


def check_data_folder(out_dir: str | Path) -> Path:
    """`out_dir` as a data folder to replace: new, empty, or holding only what this stage writes."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(f"--out {out_dir} is a file, not a folder")
    other = sorted(p.name for p in out_dir.iterdir() if p.name not in DATA_FILES) if out_dir.is_dir() else []
    if other:
        raise DatasetError(f"--out {out_dir} holds other files ({', '.join(other[:3])}{' ...' if len(other) > 3 else ''}),"
                           " which replacing it would delete: give a new or empty folder")
    return out_dir


def save_splits(out_dir: str | Path, splits: dict[str, Split], source: dict) -> dict:
    """Write `<split>.npz` for each split and `manifest.json` (classes, counts, hashes, source) into
    `out_dir`, which should be a fresh folder (`python -m vitedge.data` writes a temporary one and
    renames it into place whole: a kill between two splits must not leave a mix that loads)."""
    out_dir = Path(out_dir)
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise DatasetError(f"missing split(s): {', '.join(missing)}")
    manifest = {"classes": list(CLASSES), "source": source, "splits": {}}
    for name in SPLITS:
        sp = splits[name]
        for c, n in enumerate(sp.counts()):
            if n == 0 and name == "train":
                raise DatasetError(f"class '{CLASSES[c]}' has no images in the train split")
        with atomic_path(out_dir / f"{name}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, images=sp.images, labels=sp.labels, paths=np.array(sp.paths, dtype=str))
        manifest["splits"][name] = {
            "file": f"{name}.npz",
            "count": len(sp),
            "image_shape": list(sp.images.shape[1:]),
            "class_counts": dict(zip(CLASSES, sp.counts())),
            "sha256": sp.content_hash(),
        }
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def load_splits(data_dir: str | Path, names: tuple[str, ...] = SPLITS) -> dict[str, Split]:
    """Read splits written by `save_splits`, checking them against the manifest: counts and content
    hashes, so a split file from another dataset (or a half-replaced folder) does not load silently."""
    data_dir = Path(data_dir)
    manifest_path = data_dir / "manifest.json"
    if not manifest_path.is_file():
        raise DatasetError(f"no manifest.json in {data_dir}: run the data stage first (snakemake ... data)")
    try:
        manifest = read_json(manifest_path)
        classes, entries = manifest["classes"], manifest["splits"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise DatasetError(f"{manifest_path}: not a vitedge data manifest ({type(exc).__name__}: {exc}); "
                           "rerun the data stage") from None
    if not isinstance(classes, list) or tuple(classes) != CLASSES:
        raise DatasetError(f"{manifest_path}: class order {classes} differs from {list(CLASSES)}")
    out = {}
    for name in names:
        entry = entries.get(name) if isinstance(entries, dict) else None
        if not isinstance(entry, dict) or entry.get("file") != f"{name}.npz":
            raise DatasetError(f"{manifest_path}: no '{name}' split")
        out[name] = _load_split(data_dir / entry["file"], entry)
    return out


def _load_split(path: Path, entry: dict) -> Split:
    try:
        with np.load(path, allow_pickle=False) as z:
            sp = Split(z["images"], z["labels"], z["paths"].tolist())
    except (OSError, ValueError, KeyError, EOFError) as exc:  # missing, truncated, not an npz of ours
        raise DatasetError(f"{path}: cannot read this split ({type(exc).__name__}: {exc}); rerun the data stage") from None
    if len(sp) and not 0 <= sp.labels.min() <= sp.labels.max() < len(CLASSES):
        raise DatasetError(f"{path}: labels outside 0..{len(CLASSES) - 1}")
    if len(sp) != entry.get("count"):
        raise DatasetError(f"{path}: {len(sp)} images, manifest says {entry.get('count')}")
    if sp.content_hash() != entry.get("sha256"):
        raise DatasetError(f"{path}: its content does not match the manifest's checksum (a split of another "
                           "dataset, or a folder changed by hand); rerun the data stage")
    return sp
