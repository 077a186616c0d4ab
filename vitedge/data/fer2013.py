"""Read FER-2013 in either of its common distributions into in-memory splits.

Accepted sources (`load_fer2013(path)`):

* the Kaggle zip ("msambare/fer2013"), read in place with `zipfile`, never extracted;
* the same zip extracted to a folder;
* the original `fer2013.csv` (columns `emotion,pixels,Usage`);
* a pack (`.npz`, `pack_images`): some of the zip's image files, byte for byte, in one compressed
  array beside their names. The JPEGs' identical headers deflate across files where the zip, one
  stored member each, cannot: FER-2013's Training images are 37.4 MB in the zip (41.5 MB with its
  per-member headers) and 28 MB packed, which is what lets them travel with the repository to a
  GPU machine that takes 64 MiB a call (`benchmarks/gpu_carry.py`).

Folder layout (inside the zip or the folder, optionally below one wrapper folder)::

    train/<emotion>/Training_<id>.jpg     -> train
    test/<emotion>/PublicTest_<id>.jpg    -> val   (the usual validation split)
    test/<emotion>/PrivateTest_<id>.jpg   -> test  (the split papers report)

`<emotion>` folders are mapped to `CLASSES` by name, case-insensitively. A `val/` (or
`valid/`, `validation/`) folder is taken as val. Files without the FER prefixes follow
their folder: train/ -> train, test/ -> split half/half into val and test (stratified,
seeded) unless a val folder exists. When val or test is still missing after that, it is
carved out of train (stratified, `val_fraction` of each class).

Unreadable images (corrupt, truncated, not really images) are skipped, counted in the
report and logged once; they never abort the read. Layout problems (no train split,
unknown class folder, empty class, unsafe archive entries) raise `DatasetError`.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import re
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

import numpy as np
from PIL import Image
from tqdm import tqdm

from vitedge.data.splits import CLASSES, SPLITS, DatasetError, Split
from vitedge.defaults import MAX_IMAGE_PIXELS
from vitedge.io import atomic_path, sha256_file
from vitedge.preprocess import Preprocess, to_gray_uint8

log = logging.getLogger("vitedge.data")

IMG_SIZE = 48  # FER-2013's native size; the cache keeps it, models resize on the fly
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
MAX_IMAGE_BYTES = 32 << 20  # a face crop is a few KB; anything this big is not one (zip bomb guard)
# ... and its header may still declare any size: a 280 KB 16-bit PNG of 12000x12000 decodes to 3.2 GB.
# vitedge.infer's cap (vitedge.defaults), checked on the header before any pixel is decoded
MAX_PIXELS = MAX_IMAGE_PIXELS
MAX_SKIPPED_EXAMPLES = 5

# Folder names for each split; test/ is special because FER's file prefixes divide it.
_SPLIT_DIRS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_TEST_PREFIX_SPLIT = {"PublicTest": "val", "PrivateTest": "test"}
_USAGE_SPLIT = {"training": "train", "publictest": "val", "privatetest": "test"}
_CSV_PIXELS = IMG_SIZE * IMG_SIZE
_DRIVE = re.compile(r"^[A-Za-z]:")

# The same resize the models' preprocessing uses, so a non-48px image in a dataset is
# treated exactly as it would be at inference time.
_RESIZE = Preprocess(img_size=IMG_SIZE)


@dataclass(frozen=True)
class _Entry:
    """One image file of a folder-layout dataset, before decoding."""

    name: str  # path relative to the source (posix), used in reports and Split.paths
    split: str | None  # train/val/test, or None: in test/ without a FER prefix
    origin: str  # the rule that placed it, e.g. "test/PublicTest_*", for the report
    label: int


class _Skipped:
    """Counts unreadable items and keeps the first few with their reason."""

    def __init__(self) -> None:
        self.count = 0
        self.examples: list[str] = []

    def add(self, name: str, reason: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_SKIPPED_EXAMPLES:
            self.examples.append(f"{name}: {reason}")

    def log_once(self, source: Path, what: str) -> None:
        if self.count:
            log.warning("skipped %d unreadable %s in %s, e.g. %s", self.count, what, source, "; ".join(self.examples))


def load_fer2013(
    path: str | os.PathLike, val_fraction: float = 0.1, seed: int = 0, progress: bool = True
) -> tuple[dict[str, Split], dict]:
    """Read FER-2013 from the Kaggle zip, its extracted folder or `fer2013.csv`.

    Returns `({"train", "val", "test"} -> Split, report)`. The report (JSON-serialisable,
    stored in the manifest) records the source, how val/test were formed, per-split class
    counts, the images' sizes on disk per split (`image_sizes`, {"WxH": count}; every image
    is resized to 48x48 on load, so this is the only record of e.g. an upsampled copy) and
    the unreadable items that were skipped.
    """
    if not 0.0 < val_fraction < 0.5:
        raise DatasetError(f"val_fraction must be in (0, 0.5), got {val_fraction}")
    path = Path(path)
    if path.is_dir():
        splits, report = _load_folder(path, val_fraction, seed, progress)
    elif not path.is_file():
        raise DatasetError(f"{path}: no such file or folder")
    elif path.suffix.lower() == ".csv":
        splits, report = _load_csv(path, val_fraction, seed, progress)
    elif path.suffix.lower() == ".npz":
        splits, report = _load_packed(path, val_fraction, seed, progress)
    elif zipfile.is_zipfile(path):
        splits, report = _load_zip(path, val_fraction, seed, progress)
    else:
        raise DatasetError(f"{path}: not a zip archive, a folder or a .csv file")
    report = {
        "path": str(path.resolve()),
        **report,
        "seed": seed,
        "val_fraction": val_fraction,
        "counts": {name: dict(zip(CLASSES, sp.counts())) for name, sp in splits.items()},
    }
    if path.is_file():
        report["sha256"] = sha256_file(path)
    return splits, report


# ---------------------------------------------------------------- zip and folder


def _load_zip(path: Path, val_fraction: float, seed: int, progress: bool) -> tuple[dict[str, Split], dict]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{path}: cannot open zip archive: {exc}") from exc
    with zf:
        members = {}
        for info in zf.infolist():
            _check_member_name(path, info.filename)
            if not info.is_dir():
                members[info.filename.replace("\\", "/")] = info

        def read(name: str) -> bytes:
            info = members[name]
            if info.file_size > MAX_IMAGE_BYTES:
                raise ValueError(f"{info.file_size} bytes, too large for an image")
            return zf.read(info)

        return _load_layout(path, "kaggle-zip", list(members), read, val_fraction, seed, progress)


def pack_images(source: str | os.PathLike, dest: str | os.PathLike, prefix: str = "") -> dict:
    """Copy the image entries of a FER-2013 zip whose names start with `prefix` (e.g. "train/") into
    one `.npz` that `load_fer2013` reads like the zip: `names`, `offsets` (entry i is
    `blob[offsets[i]:offsets[i + 1]]`) and `blob`, the files' bytes as they are in the zip (never
    decoded or re-encoded), plus `source_sha256`. Returns {"count", "bytes", "source_sha256"}."""
    source = Path(source)
    with zipfile.ZipFile(source) as zf:
        infos = sorted((i for i in zf.infolist() if not i.is_dir() and i.filename.startswith(prefix)
                        and _is_image(tuple(i.filename.split("/")))), key=lambda i: i.filename)
        for info in infos:
            _check_member_name(source, info.filename)
        data = [zf.read(info) for info in infos]
    if not data:
        raise DatasetError(f"{source}: no image entries under {prefix!r}")
    offsets = np.zeros(len(data) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(d) for d in data])
    digest = sha256_file(source)
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, names=np.array([i.filename for i in infos]), offsets=offsets,
                                blob=np.frombuffer(b"".join(data), dtype=np.uint8), source_sha256=np.array(digest))
    return {"count": len(data), "bytes": int(offsets[-1]), "source_sha256": digest}


def read_pack(path: str | os.PathLike) -> dict[str, bytes]:
    """{entry name: its bytes} of a pack written by `pack_images`."""
    with np.load(path, allow_pickle=False) as z:
        names, offsets, blob = z["names"].tolist(), z["offsets"], z["blob"]
    return {name: blob[offsets[i]:offsets[i + 1]].tobytes() for i, name in enumerate(names)}


def _load_packed(path: Path, val_fraction: float, seed: int, progress: bool) -> tuple[dict[str, Split], dict]:
    try:
        files = read_pack(path)
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"{path}: not an image pack written by vitedge.data.fer2013.pack_images: {exc}") from exc
    for name in files:
        _check_member_name(path, name)
    return _load_layout(path, "packed", list(files), files.__getitem__, val_fraction, seed, progress)


def _load_folder(path: Path, val_fraction: float, seed: int, progress: bool) -> tuple[dict[str, Split], dict]:
    names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    inside = path.resolve()
    for name in names:
        # a link out of the dataset folder would read any file this user can: refused, as the zip reader
        # refuses entries that would escape the archive
        if not (path / name).resolve().is_relative_to(inside):
            raise DatasetError(f"{path}: {name!r} is a link to {(path / name).resolve()}, outside the dataset "
                               "folder; refusing to read this folder")
    archives = [n for n in names if "/" not in n and n.lower().endswith((".zip", ".csv"))]
    if archives and not any(_is_image(tuple(n.split("/"))) for n in names):
        # e.g. the datasets folder that holds fer2013.zip was given instead of the zip
        raise DatasetError(f"{path}: no images in this folder; did you mean {path / archives[0]}?")

    def read(name: str) -> bytes:
        file = path / name
        size = file.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ValueError(f"{size} bytes, too large for an image")
        return file.read_bytes()

    return _load_layout(path, "kaggle-folder", names, read, val_fraction, seed, progress)


def _check_member_name(archive: Path, name: str) -> None:
    """Reject archive entries that would escape the archive if anyone ever extracted it.

    We never extract, but a zip carrying such names was not made by the FER download
    and should not be trusted as a dataset.
    """
    parts = re.split(r"[\\/]", name)
    problem = None
    if name.startswith(("/", "\\")):
        problem = "absolute path"
    elif _DRIVE.match(name):
        problem = "drive letter"
    elif ".." in parts:
        problem = "'..' component"
    if problem:
        raise DatasetError(f"{archive}: unsafe entry {name!r} ({problem}); refusing to read this archive")


def _load_layout(
    source: Path,
    kind: str,
    names: Iterable[str],
    read: Callable[[str], bytes],
    val_fraction: float,
    seed: int,
    progress: bool,
) -> tuple[dict[str, Split], dict]:
    """Shared by zip and folder: find the dataset root, label files, decode, split."""
    entries, root, ignored = _index_layout(source, names)
    skipped = _Skipped()
    images = np.empty((len(entries), IMG_SIZE, IMG_SIZE), dtype=np.uint8)
    keep = np.zeros(len(entries), dtype=bool)
    size_of: dict[str, str] = {}  # entry name -> "WxH" on disk, before the resize to 48x48
    for i, entry in enumerate(tqdm(entries, desc=f"decoding {source.name}", unit="img", disable=not progress)):
        try:
            images[i], size_of[entry.name] = _decode(read(entry.name))
            keep[i] = True
        except Exception as exc:  # noqa: BLE001 - PIL and zipfile raise many types; one bad file must not stop the read
            skipped.add(entry.name, _reason(exc))
    skipped.log_once(source, "image(s)")
    if ignored:
        log.warning("ignored %d image(s) in %s outside <split>/<emotion>/ folders", ignored, source)

    entries = [e for e, k in zip(entries, keep) if k]
    images = images[keep]
    labels = np.array([e.label for e in entries], dtype=np.int64)
    names_kept = [e.name for e in entries]
    by_split = {s: np.array([i for i, e in enumerate(entries) if e.split == s], dtype=np.int64) for s in SPLITS}
    unassigned = np.array([i for i, e in enumerate(entries) if e.split is None], dtype=np.int64)

    full = Split(images, labels, names_kept)
    _check_train_classes(source, labels[by_split["train"]])
    method = {s: " + ".join(sorted({entries[i].origin for i in idx})) for s, idx in by_split.items()}
    rng = np.random.default_rng(seed)
    if len(unassigned):
        origin = entries[unassigned[0]].origin
        if len(by_split["val"]):
            # val already has its own images (a val/ folder or PublicTest_ files): no halving
            by_split["test"] = np.concatenate([by_split["test"], unassigned])
            method["test"] = " + ".join(filter(None, [method["test"], origin]))
        else:
            val_half, test_half = _stratified_parts(labels[unassigned], [0.5], rng)
            by_split["val"] = unassigned[val_half]
            by_split["test"] = np.concatenate([by_split["test"], unassigned[test_half]])
            method["val"] = f"half of {origin} (no FER prefix), stratified"
            method["test"] = " + ".join(filter(None, [method["test"], f"other half of {origin}"]))
    splits = {name: full.subset(np.sort(idx)) for name, idx in by_split.items()}
    splits, method = _carve_missing(splits, method, val_fraction, rng)
    report = {
        "kind": kind,
        "root": root,
        "split_method": method,
        "skipped": skipped.count,
        "skipped_examples": skipped.examples,
        "ignored_images": ignored,
        # Split.paths are the entry names, so this follows any carving done above
        "image_sizes": {name: _size_counts(size_of[p] for p in sp.paths) for name, sp in splits.items()},
    }
    return splits, report


def _index_layout(source: Path, names: Iterable[str]) -> tuple[list[_Entry], str, int]:
    """Label every image file by its `<root>/<split>/<emotion>/<file>` path.

    Returns the entries (sorted by name, so the result does not depend on listing order),
    the root prefix ("" or a wrapper folder) and how many images lay outside the layout.
    """
    candidates: dict[tuple[str, ...], list[tuple[str, tuple[str, ...]]]] = {}
    other_images = 0
    for name in sorted(names):
        parts = tuple(p for p in name.split("/") if p)
        if not _is_image(parts):
            continue
        # An image's split folder sits two levels above it; what precedes is the root.
        if len(parts) >= 3 and parts[-3].lower() in _SPLIT_DIRS:
            candidates.setdefault(parts[:-3], []).append((name, parts))
        else:
            other_images += 1
    roots = [r for r, files in candidates.items() if any(p[-3].lower() == "train" for _, p in files)]
    if not roots:
        found = sorted({"/".join(r) or "." for r in candidates})
        hint = f" (split folders found only in: {', '.join(found)})" if found else ""
        raise DatasetError(f"{source}: no train/<emotion>/ images found{hint}; expected the FER-2013 Kaggle layout")
    if len(roots) > 1:
        listed = ", ".join("/".join(r) + "/" if r else "./" for r in sorted(roots))
        raise DatasetError(f"{source}: several datasets found ({listed}); point at one of them")
    root = roots[0]
    other_images += sum(len(files) for r, files in candidates.items() if r != root)

    entries = []
    for name, parts in candidates[root]:
        class_dir = parts[-2]
        if class_dir.lower() not in CLASSES:
            raise DatasetError(
                f"{source}: unknown emotion folder {'/'.join(parts[:-1])!r}; expected one of {', '.join(CLASSES)}"
            )
        split, origin = _file_split(parts[-3], parts[-1])
        entries.append(_Entry(name, split, origin, CLASSES.index(class_dir.lower())))
    return entries, "/".join(root), other_images


def _is_image(parts: tuple[str, ...]) -> bool:
    """Image by extension; macOS metadata (`__MACOSX/`, `._x.jpg`) and hidden files are not."""
    if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return PurePosixPath(parts[-1]).suffix.lower() in IMAGE_EXTENSIONS


def _file_split(split_dir: str, filename: str) -> tuple[str | None, str]:
    """(split, origin): train/ and val/ folders decide; in test/ the FER prefix does.

    The split is None for a test/ file without a PublicTest_/PrivateTest_ prefix.
    """
    if _SPLIT_DIRS[split_dir.lower()] != "test":
        return _SPLIT_DIRS[split_dir.lower()], f"{split_dir}/"
    prefix = filename.split("_", 1)[0]
    if "_" in filename and prefix in _TEST_PREFIX_SPLIT:
        return _TEST_PREFIX_SPLIT[prefix], f"{split_dir}/{prefix}_*"
    return None, f"{split_dir}/"


def _decode(data: bytes) -> tuple[np.ndarray, str]:
    """Bytes of any PIL-readable image -> ((48, 48) uint8 grayscale, "WxH" as stored in the file)."""
    with Image.open(io.BytesIO(data)) as im:
        if im.width * im.height > MAX_PIXELS:  # the header's size, before any decoding
            raise ValueError(f"{im.width}x{im.height} pixels, over the {MAX_PIXELS:,} an image may have")
        im.load()  # Image.open is lazy: truncated files only fail when pixels are decoded
        gray = to_gray_uint8(im)
    size = f"{gray.shape[1]}x{gray.shape[0]}"
    if gray.shape != (IMG_SIZE, IMG_SIZE):
        gray = _RESIZE.resize_uint8(gray[None])[0]
    return gray, size


def _size_counts(sizes: Iterable[str]) -> dict[str, int]:
    """{"WxH": count}, most common first."""
    return dict(Counter(sizes).most_common())


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ---------------------------------------------------------------- csv


def _load_csv(path: Path, val_fraction: float, seed: int, progress: bool) -> tuple[dict[str, Split], dict]:
    try:
        return _read_csv(path, val_fraction, seed, progress)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); fer2013.csv is ASCII") from None
    except csv.Error as exc:  # a field over csv's 128 KB limit, a NUL byte ...: not a FER-2013 CSV
        raise DatasetError(f"{path}: malformed CSV ({exc}); expected fer2013.csv (emotion,pixels,Usage)") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _read_csv(path: Path, val_fraction: float, seed: int, progress: bool) -> tuple[dict[str, Split], dict]:
    images: list[np.ndarray] = []
    labels: list[int] = []
    splits_of: list[str] = []
    names: list[str] = []
    skipped = _Skipped()
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        missing = [c for c in ("emotion", "pixels", "usage") if c not in header]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}; expected emotion,pixels,Usage")
        col = {c: header.index(c) for c in ("emotion", "pixels", "usage")}
        for row in tqdm(reader, desc=f"reading {path.name}", unit="row", disable=not progress):
            if not any(cell.strip() for cell in row):
                continue  # blank line, e.g. at the end of a hand-edited file
            name = f"{path.name}:{reader.line_num}"
            usage = row[col["usage"]].strip().lower() if len(row) > col["usage"] else ""
            if not usage:
                raise DatasetError(f"{name}: missing Usage value (expected Training, PublicTest or PrivateTest)")
            if usage not in _USAGE_SPLIT:
                raise DatasetError(f"{name}: unknown Usage {row[col['usage']]!r} (expected Training, PublicTest or PrivateTest)")
            try:
                label, image = _parse_csv_row(row, col)
            except ValueError as exc:
                skipped.add(name, str(exc))
                continue
            images.append(image)
            labels.append(label)
            splits_of.append(_USAGE_SPLIT[usage])
            names.append(name)
    skipped.log_once(path, "row(s)")

    stacked = np.stack(images) if images else np.empty((0, IMG_SIZE, IMG_SIZE), np.uint8)
    full = Split(stacked, np.array(labels, dtype=np.int64), names)
    where = np.array(splits_of)
    splits = {s: full.subset(np.flatnonzero(where == s)) for s in SPLITS}
    if not len(splits["train"]):
        raise DatasetError(f"{path}: no rows with Usage 'Training'")
    _check_train_classes(path, splits["train"].labels)
    method = {"train": "Usage=Training", "val": "Usage=PublicTest", "test": "Usage=PrivateTest"}
    splits, method = _carve_missing(splits, method, val_fraction, np.random.default_rng(seed))
    report = {"kind": "csv", "split_method": method, "skipped": skipped.count, "skipped_examples": skipped.examples,
              # the CSV holds exactly 48*48 values per row (checked above): one size by construction
              "image_sizes": {name: _size_counts([f"{IMG_SIZE}x{IMG_SIZE}"] * len(sp)) for name, sp in splits.items()}}
    return splits, report


def _parse_csv_row(row: list[str], col: dict[str, int]) -> tuple[int, np.ndarray]:
    try:
        label = int(row[col["emotion"]])
    except (ValueError, IndexError):
        raise ValueError("emotion is not an integer") from None
    if not 0 <= label < len(CLASSES):
        raise ValueError(f"emotion code {label} outside 0..{len(CLASSES) - 1}")
    try:
        pixels = np.array(row[col["pixels"]].split(), dtype=np.int64)
    except (ValueError, IndexError):
        raise ValueError("pixels are not integers") from None
    if pixels.size != _CSV_PIXELS:
        raise ValueError(f"{pixels.size} pixel values, expected {_CSV_PIXELS}")
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("pixel values outside 0..255")
    return label, pixels.astype(np.uint8).reshape(IMG_SIZE, IMG_SIZE)


# ---------------------------------------------------------------- splitting


def _check_train_classes(source: Path, train_labels: np.ndarray) -> None:
    if not len(train_labels):
        raise DatasetError(f"{source}: the train split has no readable images")
    counts = np.bincount(train_labels, minlength=len(CLASSES))
    empty = [CLASSES[c] for c in np.flatnonzero(counts == 0)]
    if empty:
        raise DatasetError(f"{source}: no training images for class(es) {', '.join(empty)}")


def _stratified_parts(labels: np.ndarray, fractions: list[float], rng: np.random.Generator) -> list[np.ndarray]:
    """Split positions 0..len(labels)-1 per class into len(fractions)+1 parts.

    Part k takes floor(n * fractions[k]) of each class (at least one while the class has
    enough images to leave one for the last part); the last part takes the rest.
    Classes are visited in CLASSES order, so the result depends only on labels and rng.
    """
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c in range(len(CLASSES)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for k, frac in enumerate(fractions):
            take = max(int(len(idx) * frac), 1) if len(idx) - start > 1 else 0
            parts[k].append(idx[start : start + take])
            start += take
        parts[-1].append(idx[start:])
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def _carve_missing(
    splits: dict[str, Split], method: dict[str, str], val_fraction: float, rng: np.random.Generator
) -> tuple[dict[str, Split], dict[str, str]]:
    """Fill an empty val and/or test split from train (stratified, `val_fraction` each)."""
    missing = [s for s in ("val", "test") if not len(splits[s])]
    if not missing:
        return splits, method
    train = splits["train"]
    *carved, rest = _stratified_parts(train.labels, [val_fraction] * len(missing), rng)
    splits = dict(splits, train=train.subset(rest))
    method = dict(method)
    for name, idx in zip(missing, carved):
        splits[name] = train.subset(idx)
        method[name] = f"carved from train, stratified ({val_fraction:g} of each class)"
    method["train"] += f" minus carved {'/'.join(missing)}"
    return splits, method

