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


def save_splits(out_dir: str | Path, splits: dict[str, Split], source: dict) -> dict:
    """Write `<split>.npz` for each split and `manifest.json` (classes, counts, hashes, source)."""
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
    """Read splits written by `save_splits`, checking them against the manifest."""
    data_dir = Path(data_dir)
    manifest_path = data_dir / "manifest.json"
    if not manifest_path.is_file():
        raise DatasetError(f"no manifest.json in {data_dir}: run the data stage first (snakemake ... data)")
    manifest = read_json(manifest_path)
    if tuple(manifest["classes"]) != CLASSES:
        raise DatasetError(f"{manifest_path}: class order {manifest['classes']} differs from {list(CLASSES)}")
    out = {}
    for name in names:
        entry = manifest["splits"].get(name)
        if entry is None:
            raise DatasetError(f"{manifest_path}: no '{name}' split")
        with np.load(data_dir / entry["file"], allow_pickle=False) as z:
            sp = Split(z["images"], z["labels"], z["paths"].tolist())
        if len(sp) != entry["count"]:
            raise DatasetError(f"{data_dir / entry['file']}: {len(sp)} images, manifest says {entry['count']}")
        out[name] = sp
    return out
