"""Data card: what each split holds, and whether the training split looks like the evaluation data.

Why this exists: the FER-2013 copy we once trained on had every one of its 28,709 training
images blurred (median Laplacian variance ~6 against ~2,000 for the test images). Training
ran, accuracy came out, and nobody noticed for weeks. Copies in circulation differ in other
ways too: contrast-stretched, upsampled to 224 px, "disgust" padded with augmented copies,
test images that also sit in train. Each of those is cheap to measure and obvious once
measured, so the data stage measures them every time and says so loudly.

    card = make_datacard(splits, source_report)   # numbers per split + warnings
    write_datacard(out_dir, card)                 # datacard.json (machines) + datacard.md (people)
    warn_from_datacard(data_dir)                  # training stages re-log the warnings at startup

    python -m vitedge.data.datacard DATA_DIR      # (re)build the card of an existing split cache

What is measured, per split (train, val, test) and for val+test pooled ("eval"):

* counts, per class;
* pixel mean / std on 0..255, from a 256-bin histogram (exact, and no float copy of the data);
* sharpness: per-image variance of the 3x3 Laplacian (high for crisp edges, near 0 for blur);
  median and 10th/90th percentiles, because a few blank or noisy images must not move it;
* image sizes as stored in the cache and, when the loader reports them, as stored on disk
  (the FER loader resizes everything to 48x48, so that is the only trace of a 224 px copy);
* exact duplicates (identical pixels) within a split and across splits;
* near duplicates: candidates by 64-bit dHash (area downsample to 9x8, sign of each
  horizontal step) within NEAR_HAMMING bits, found with the pigeonhole trick in `near_pairs`
  (sorting, not all N^2 pairs), then confirmed by the pixel correlation of 16x16 thumbnails.
  Mirrored copies count (flips are the commonest augmentation).

Everything is numpy; the card is plain JSON-serialisable data and deterministic for given splits.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.batching import batch_slices
from vitedge.data.splits import CLASSES, SPLITS, DatasetError, Split, load_splits
from vitedge.io import atomic_write_text, read_json, write_json

log = logging.getLogger("vitedge.data")

SCHEMA = "vitedge-datacard/1"
EVAL = "val+test"  # the pooled evaluation data every check compares train against

# ---------------------------------------------------------------- thresholds
# Train/eval ratio of median sharpness allowed either way. FER-2013's own splits: 0.83 (1,693
# vs 2,043). Measured on FER test images: Gaussian blur sigma=1 x0.07, 3x3 box blur x0.10, a 2x
# upsample kept at 96 px x0.05, JPEG q75 x0.95; the blurred copy we trained on was x0.003.
SHARPNESS_RATIO = 4.0
# Laplacian variance added to both medians before taking the ratio: keeps all-flat test data
# (median 0) from dividing by zero, and is negligible against real photos (hundreds to thousands).
SHARPNESS_FLOOR = 1.0
# Largest allowed difference of mean grey level (0..255). FER-2013's splits differ by < 1;
# a brightness/gamma change or a different normalisation moves it by tens.
MEAN_DIFF = 15.0
# Train/eval ratio of pixel std allowed either way. FER-2013's splits: within 1%; a 1.5x
# contrast stretch (clipped) of FER images: 1.32x.
STD_RATIO = 1.3
# Share of train images at a size no eval image has (or of eval images at a size train never
# has) allowed. 1% tolerates a few odd files; an upsampled copy is at 100%. (A 224 px copy
# resized back to 48 px by the loader keeps ~40% of its sharpness: only its size gives it away.)
SIZE_MISMATCH_FRACTION = 0.01
# Train/eval ratio of a class's share of the images allowed either way (classes with at least
# CLASS_MIN images in both). FER-2013: within 1.1x; our synthetic set keeps "disgust" at a third
# in train only (2.7x); FER with "disgust" padded by augmentation to the size of the others: ~8x.
CLASS_SHARE_RATIO = 4.0
CLASS_MIN = 20
# Share of eval images with an identical image in train allowed. Any is leakage in principle;
# FER-2013 has 1 of 7,178, which we tolerate.
LEAK_FRACTION = 0.01
# Share of eval images with a near duplicate in train allowed. FER-2013 itself is at 10%: the
# same web picture re-encoded landed in several splits (checked by eye). Far above that, eval
# was carved from data that already held copies (e.g. augmented), so test accuracy is inflated.
NEAR_LEAK_FRACTION = 0.20
# Share of a split's images that have a near twin in the same split allowed, and the share
# within any one class (of at least CLASS_MIN images). FER-2013's train: 10% overall, 32% of
# "surprise", 28% of "disgust". Augmented (flipped, brightened) copies mixed in to balance a
# class put nearly all of that class in twin pairs.
WITHIN_DUP_FRACTION = 0.20
CLASS_DUP_FRACTION = 0.50
# dHash Hamming distance up to which two images are near-duplicate candidates: re-encoding,
# +-1 grey level noise, brightness/contrast changes and resizing stay within it. Aligned faces
# of different people land this close too, hence the confirmation below.
NEAR_HAMMING = 4
# ... and the pixel correlation of their 16x16 thumbnails (straight or mirrored) must reach this.
# On FER-2013, dHash matches split into a cluster at >= 0.99 (the same picture) and a long tail
# down to 0.5 (different aligned faces); the tail grows with NEAR_HAMMING, the cluster does not.
NEAR_CORR = 0.98

_CHUNK = 4096  # images converted to float at once: bounds memory to ~40 MB at 48x48
_EXAMPLES = 3  # duplicate pairs listed per overlap, so people can look at them


# ---------------------------------------------------------------- measurements


def laplacian_variance(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 -> (N,) variance of the 4-neighbour Laplacian over each image's interior.

    Blur removes exactly the high frequencies the Laplacian responds to, so this drops by
    orders of magnitude for a blurred copy while brightness shifts leave it unchanged.
    """
    out = np.empty(len(images), dtype=np.float64)
    for chunk in batch_slices(len(images), _CHUNK):
        x = images[chunk].astype(np.float32)
        lap = x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:] - 4 * x[:, 1:-1, 1:-1]
        out[chunk] = lap.reshape(len(x), -1).var(axis=1)
    return out


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights averaging n_in pixels into n_out equal cells (area resampling).

    Works for any input size, so a 48 px and a 224 px copy of a picture get the same hash.
    """
    edges = np.arange(n_out + 1) * (n_in / n_out)
    pix = np.arange(n_in)
    overlap = np.minimum(edges[1:, None], pix[None, :] + 1) - np.maximum(edges[:-1, None], pix[None, :])
    w = np.clip(overlap, 0.0, None)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _downsample(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, H, W) uint8 -> (N, height, width) float32 area averages, for any H, W."""
    n, h, w = images.shape
    rows, cols = _area_matrix(h, height), _area_matrix(w, width)
    out = np.empty((n, height, width), dtype=np.float32)
    for chunk in batch_slices(n, _CHUNK):
        x = images[chunk].astype(np.float32)
        k = len(x)
        # two plain matrix products: columns (k*H, W) @ (W, width), then rows (k*width, H) @ (H, height)
        t = (x.reshape(k * h, w) @ cols.T).reshape(k, h, width).transpose(0, 2, 1)
        out[chunk] = (t.reshape(k * width, h) @ rows.T).reshape(k, width, height).transpose(0, 2, 1)
    return out


def dhash(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) uint8 -> ((N,) uint64 dHash, (N,) uint64 dHash of the mirrored image).

    Each bit says whether a cell of the 9x8 area downsample is brighter than its left
    neighbour: robust to brightness, contrast, noise and resizing, not to crops or rotations.
    """
    grid = _downsample(images, 8, 9)
    hashes = []
    for g in (grid, grid[:, :, ::-1]):  # the area cells of a mirror image are the mirrored cells
        # a small margin: float rounding in the averages must not turn flat areas into random bits
        bits = (g[:, :, 1:] - g[:, :, :-1]) > 1e-3
        hashes.append(np.packbits(bits.reshape(len(g), 64), axis=1).view(">u8").ravel().astype(np.uint64))
    return hashes[0], hashes[1]


def thumbnails(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 -> (N, 16*16) float32, each standardised (zero mean, unit norm; flat images all 0).

    The dot product of two thumbnails is their pixel correlation: the check that confirms a
    dHash match, since aligned faces of different people often land a few bits apart.
    """
    t = _downsample(images, 16, 16).reshape(len(images), -1)
    t -= t.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(t, axis=1, keepdims=True)
    return np.divide(t, norm, out=np.zeros_like(t), where=norm > 1e-3)


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (np.bitwise_count needs numpy 2; we support 1.26)."""
    return _POPCOUNT8[x.astype(np.uint64).view(np.uint8)].reshape(len(x), 8).sum(axis=1)


def near_pairs(hashes: np.ndarray, max_distance: int = NEAR_HAMMING) -> np.ndarray:
    """All pairs (i < j) of `hashes` within `max_distance` bits, as an (M, 2) int64 array.

    Pigeonhole: split the 64 bits into max_distance + 1 bands; two hashes that differ in at
    most max_distance bits agree exactly on at least one band. So per band, sort by the
    band's value and compare only hashes inside a run of equal values. Pass k of the loop
    compares every element with the one k places further on in its run, so the work is
    a sort plus the number of candidate pairs, never all N^2 pairs.
    """
    n = len(hashes)
    bands = max_distance + 1
    width = 64 // bands
    found = []
    pos = np.arange(n)
    for b in range(bands):
        shift = np.uint64(64 - width * (b + 1)) if b < bands - 1 else np.uint64(0)
        nbits = width if b < bands - 1 else 64 - width * (bands - 1)
        key = (hashes >> shift) & np.uint64((1 << nbits) - 1)
        order = np.argsort(key, kind="stable")
        sk = key[order]
        starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
        run_end = np.repeat(np.r_[starts[1:], n], np.diff(np.r_[starts, n]))  # exclusive end of each run
        step = 1
        i = pos[pos + 1 < run_end]
        while len(i):
            a, c = order[i], order[i + step]
            close = _popcount(hashes[a] ^ hashes[c]) <= max_distance
            found.append(np.stack([np.minimum(a, c)[close], np.maximum(a, c)[close]], axis=1))
            step += 1
            i = i[i + step < run_end[i]]
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate(found).astype(np.int64)
    return np.unique(pairs, axis=0)  # a pair agreeing on several bands is found once per band


def _exact_ids(images: list[np.ndarray]) -> np.ndarray:
    """One int per image, equal exactly for identical images (same size, same pixels)."""
    ids: dict[bytes, int] = {}
    out = []
    for split_images in images:
        shape = repr(split_images.shape[1:]).encode()
        for img in split_images:
            out.append(ids.setdefault(hashlib.blake2b(shape + img.tobytes(), digest_size=16).digest(), len(ids)))
    return np.array(out, dtype=np.int64)


def _pixel_stats(images: list[np.ndarray]) -> tuple[float | None, float | None]:
    """Mean and std of all pixels, from a 256-bin histogram: exact, in one pass, no float copy."""
    hist = np.zeros(256, np.int64)
    for split_images in images:
        for chunk in batch_slices(len(split_images), _CHUNK):  # bincount copies its input to int64: bound that copy
            hist += np.bincount(split_images[chunk].ravel(), minlength=256)
    n = hist.sum()
    if not n:
        return None, None
    levels = np.arange(256, dtype=np.float64)
    mean = float(hist @ levels / n)
    var = float(hist @ (levels - mean) ** 2 / n)
    return round(mean, 2), round(var**0.5, 2)


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    if not len(values):
        return {"median": None, "p10": None, "p90": None}
    p10, median, p90 = np.percentile(values, [10, 50, 90])
    return {"median": round(float(median), 1), "p10": round(float(p10), 1), "p90": round(float(p90), 1)}


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"  # "WxH", as image tools print sizes


# ---------------------------------------------------------------- the card


def make_datacard(splits: dict[str, Split], source_report: dict | None = None) -> dict[str, Any]:
    """Measure every split of `splits` ({"train", "val", "test"} -> Split) and compare train with val+test.

    `source_report` is the loader's report (load_source/load_fer2013): its kind/path/sha256
    identify the data, and its `image_sizes` ({split: {"WxH": count}}, sizes on disk) is used
    when present. Returns a JSON-serialisable dict; `card["warnings"]` lists what looks wrong,
    each {check, message, train, eval, threshold}.
    """
    source_report = source_report or {}
    names = [s for s in SPLITS if s in splits]
    disk_sizes = source_report.get("image_sizes") or {}
    sharp = {s: laplacian_variance(splits[s].images) for s in names}
    eval_names = [s for s in names if s != "train"]

    card: dict[str, Any] = {
        "schema": SCHEMA,
        "source": {k: source_report[k] for k in ("kind", "path", "sha256", "root", "seed") if k in source_report},
        "classes": list(CLASSES),
        "splits": {},
    }
    # Per split, then val+test pooled: the same fields, so tables and checks read them alike.
    groups = {s: [s] for s in names}
    if eval_names:
        groups[EVAL] = eval_names
    for group, members in groups.items():
        mean, std = _pixel_stats([splits[s].images for s in members])
        stored: dict[str, int] = {}
        on_disk: dict[str, int] | None = {}
        for s in members:
            size = _size(splits[s].images.shape[1:])
            stored[size] = stored.get(size, 0) + len(splits[s])
            if on_disk is not None and s in disk_sizes:
                for k, v in disk_sizes[s].items():
                    on_disk[k] = on_disk.get(k, 0) + v
            else:
                on_disk = None  # unknown for one member: unknown for the group
        card["splits"][group] = {
            "count": sum(len(splits[s]) for s in members),
            "class_counts": dict(zip(CLASSES, np.sum([splits[s].counts() for s in members], axis=0).tolist())),
            "pixel_mean": mean,
            "pixel_std": std,
            "sharpness": _percentiles(np.concatenate([sharp[s] for s in members])),
            "stored_sizes": stored,
            "disk_sizes": on_disk,
        }
    _duplicates(splits, names, card)
    card["near_duplicate_rule"] = (f"64-bit dHash (area downsample to 9x8) within {NEAR_HAMMING} bits and pixel "
                                   f"correlation of 16x16 thumbnails >= {NEAR_CORR:g}, mirrored copies included; "
                                   "exact copies count as near duplicates too")
    card["warnings"] = _checks(card) if "train" in names and eval_names else []
    return card


@dataclass
class _Pool:
    """Every image of every split in one index (image i of split k at offsets[k] + i), so
    cross-split pairs come out of the same search as within-split ones."""

    splits: dict[str, Split]
    names: list[str]  # the splits pooled, in SPLITS order
    offsets: np.ndarray  # (len(names) + 1,) where each split starts, then the total
    split_of: np.ndarray  # (n,) index into names of each image
    labels: np.ndarray  # (n,) class of each image
    exact: np.ndarray  # (n,) equal exactly for identical images (_exact_ids)

    @classmethod
    def of(cls, splits: dict[str, Split], names: list[str]) -> "_Pool":
        offsets = np.cumsum([0] + [len(splits[s]) for s in names])
        n = int(offsets[-1])
        return cls(splits, names, offsets, split_of=np.repeat(np.arange(len(names)), np.diff(offsets)),
                   labels=np.concatenate([splits[s].labels for s in names]) if n else np.empty(0, np.int64),
                   exact=_exact_ids([splits[s].images for s in names]))

    @property
    def n(self) -> int:
        return int(self.offsets[-1])

    def name(self, i: int) -> str:
        """The source path of image i, for examples people can look up."""
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        sp, j = self.splits[self.names[k]], int(i - self.offsets[k])
        return sp.paths[j] if sp.paths else f"{self.names[k]}[{j}]"


def _duplicates(splits: dict[str, Split], names: list[str], card: dict[str, Any]) -> None:
    """Exact and near duplicates within each split and between each pair of splits, into `card`."""
    card["overlap"] = {}
    if not names:
        return
    pool = _Pool.of(splits, names)
    a, b = _near_duplicate_pairs(pool)
    _within_split_duplicates(pool, a, b, card["splits"])
    card["overlap"].update(_cross_split_overlap(pool, a, b))


def _near_duplicate_pairs(pool: _Pool) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) with a[k] < b[k]: the confirmed near-duplicate pairs of the pool, exact copies included."""
    n, images = pool.n, [pool.splits[s].images for s in pool.names]
    # dHash candidates (image vs image, and image vs the other's mirror) ...
    plain, mirrored = zip(*(dhash(x) for x in images))
    pairs = near_pairs(np.concatenate([*plain, *mirrored]))
    # items n.. are mirror images: drop mirror~mirror (the same pair again) and an image
    # against its own mirror (any symmetric face)
    is_mirror = pairs >= n
    pairs = pairs % max(n, 1)
    pairs = np.unique(np.sort(pairs[~is_mirror.all(axis=1) & (pairs[:, 0] != pairs[:, 1])], axis=1), axis=0)
    a, b = pairs[:, 0], pairs[:, 1]
    # ... confirmed by pixel correlation of 16x16 thumbnails, straight or mirrored; two blank
    # (flat) images are near duplicates of each other, though their correlation is undefined
    thumbs = np.concatenate([thumbnails(x) for x in images])
    mirror_thumbs = thumbs.reshape(n, 16, 16)[:, :, ::-1].reshape(n, -1)
    corr = np.maximum(np.einsum("ij,ij->i", thumbs[a], thumbs[b]), np.einsum("ij,ij->i", thumbs[a], mirror_thumbs[b]))
    flat = ~thumbs.any(axis=1)
    confirmed = (corr >= NEAR_CORR) | (flat[a] & flat[b]) | (pool.exact[a] == pool.exact[b])
    return a[confirmed], b[confirmed]


def _within_split_duplicates(pool: _Pool, a: np.ndarray, b: np.ndarray, cards: dict[str, dict[str, Any]]) -> None:
    """Per split: extra exact copies, images with a near twin (per class too), a few example pairs."""
    exact = pool.exact
    shown = exact[a] != exact[b]  # examples show near pairs that are not exact copies (those are listed apart)
    for k, s in enumerate(pool.names):
        here = pool.split_of == k
        sp = cards[s]
        sp["exact_duplicates"] = int(here.sum() - len(np.unique(exact[here])))  # extra copies
        same = here[a] & here[b]
        twin = np.zeros(pool.n, dtype=bool)
        twin[a[same]] = True
        twin[b[same]] = True
        sp["near_duplicates"] = int(twin[here].sum())  # images with a twin, both of each pair counted
        sp["near_duplicates_by_class"] = dict(zip(CLASSES, np.bincount(pool.labels[twin],
                                                                       minlength=len(CLASSES)).tolist()))
        sp["near_duplicate_examples"] = [f"{pool.name(a[p])} ~ {pool.name(b[p])}"
                                         for p in np.flatnonzero(same & shown)[:_EXAMPLES]]


def _cross_split_overlap(pool: _Pool, a: np.ndarray, b: np.ndarray) -> dict[str, dict[str, Any]]:
    """{"first&second": ...} per pair of splits: how many images of the later split have a copy in the earlier."""
    exact, names = pool.exact, pool.names
    shown = exact[a] != exact[b]
    overlap = {}
    for i, first in enumerate(names):
        for j in range(i + 1, len(names)):
            second = names[j]
            in_first, in_second = pool.split_of == i, pool.split_of == j
            exact_hit = in_second & np.isin(exact, exact[in_first])
            cross = (in_first[a] & in_second[b]) | (in_first[b] & in_second[a])
            lo, hi = np.minimum(a[cross], b[cross]), np.maximum(a[cross], b[cross])  # lo in first, hi in second
            first_of = {e: t for t, e in reversed(list(zip(np.flatnonzero(in_first), exact[in_first])))}
            overlap[f"{first}&{second}"] = {
                "exact": int(exact_hit.sum()),
                "near": len(np.unique(hi)),
                "of": len(pool.splits[second]),
                "exact_examples": [f"{pool.name(first_of[exact[t]])} == {pool.name(t)}"
                                   for t in np.flatnonzero(exact_hit)[:_EXAMPLES]],
                "near_examples": [f"{pool.name(x)} ~ {pool.name(y)}"
                                  for x, y in zip(lo[shown[cross]], hi[shown[cross]])][:_EXAMPLES],
            }
    return overlap


def _checks(card: dict[str, Any]) -> list[dict[str, Any]]:
    """Compare train with val+test pooled; one warning dict per problem found."""
    tr, ev = card["splits"]["train"], card["splits"][EVAL]
    return [*_check_sharpness(tr, ev), *_check_pixels(tr, ev), *_check_sizes(tr, ev),
            *_check_class_balance(card["classes"], tr, ev), *_check_leakage(card["overlap"]),
            *_check_duplicates(card["splits"])]


def _warning(check: str, message: str, train: Any, eval_: Any, threshold: Any) -> dict[str, Any]:
    return {"check": check, "message": message, "train": train, "eval": eval_, "threshold": threshold}


def _check_sharpness(tr: dict[str, Any], ev: dict[str, Any]) -> list[dict[str, Any]]:
    """A blurred (or sharpened, or resampled) copy of one side."""
    t_med, e_med = tr["sharpness"]["median"], ev["sharpness"]["median"]
    if t_med is None or e_med is None:
        return []
    r = (t_med + SHARPNESS_FLOOR) / (e_med + SHARPNESS_FLOOR)
    if 1 / SHARPNESS_RATIO <= r <= SHARPNESS_RATIO:
        return []
    what = "blurred or upsampled" if r < 1 else "sharpened or noisier (or the evaluation images blurred)"
    return [_warning("sharpness", f"median sharpness (3x3 Laplacian variance) is {t_med:g} in train vs {e_med:g} in "
                     f"{EVAL} (ratio {r:.3g}, allowed {1 / SHARPNESS_RATIO:g}..{SHARPNESS_RATIO:g}): the training "
                     f"images look {what}, so the model learns from different-looking pictures than it is tested on",
                     t_med, e_med, SHARPNESS_RATIO)]


def _check_pixels(tr: dict[str, Any], ev: dict[str, Any]) -> list[dict[str, Any]]:
    """Brightness and contrast."""
    if tr["pixel_mean"] is None or ev["pixel_mean"] is None:
        return []
    out = []
    d = tr["pixel_mean"] - ev["pixel_mean"]
    if abs(d) > MEAN_DIFF:
        out.append(_warning("pixel_mean", f"mean grey level is {tr['pixel_mean']:.1f} in train vs "
                            f"{ev['pixel_mean']:.1f} in {EVAL} ({d:+.1f}, allowed +-{MEAN_DIFF:g}): one side was "
                            "brightened, darkened or normalised differently", tr["pixel_mean"], ev["pixel_mean"],
                            MEAN_DIFF))
    r = tr["pixel_std"] / ev["pixel_std"] if ev["pixel_std"] else float("inf")
    if not 1 / STD_RATIO <= r <= STD_RATIO:
        out.append(_warning("pixel_std", f"pixel std is {tr['pixel_std']:.1f} in train vs {ev['pixel_std']:.1f} in "
                            f"{EVAL} (ratio {r:.2f}, allowed {1 / STD_RATIO:.2f}..{STD_RATIO:g}): one side's contrast "
                            "was stretched or squashed", tr["pixel_std"], ev["pixel_std"], STD_RATIO))
    return out


def _check_sizes(tr: dict[str, Any], ev: dict[str, Any]) -> list[dict[str, Any]]:
    """Image sizes: on disk when the loader knows them (it resizes to 48x48), else as stored."""
    key = "disk_sizes" if tr["disk_sizes"] is not None and ev["disk_sizes"] is not None else "stored_sizes"
    t_sizes, e_sizes = tr[key], ev[key]
    t_odd = sum(v for k, v in t_sizes.items() if k not in e_sizes) / max(tr["count"], 1)
    e_odd = sum(v for k, v in e_sizes.items() if k not in t_sizes) / max(ev["count"], 1)
    if max(t_odd, e_odd) <= SIZE_MISMATCH_FRACTION:
        return []
    return [_warning("image_size", f"image sizes {'on disk' if key == 'disk_sizes' else 'as stored'} differ: train "
                     f"{_sizes_text(t_sizes)}, {EVAL} {_sizes_text(e_sizes)} ({100 * t_odd:.1f}% of train and "
                     f"{100 * e_odd:.1f}% of {EVAL} at a size the other lacks, allowed "
                     f"{100 * SIZE_MISMATCH_FRACTION:g}%): one side was resampled", t_sizes, e_sizes,
                     SIZE_MISMATCH_FRACTION)]


def _check_class_balance(classes: list[str], tr: dict[str, Any], ev: dict[str, Any]) -> list[dict[str, Any]]:
    """A class padded (augmented, oversampled) or thinned in one side only."""
    t_share = {c: n / max(tr["count"], 1) for c, n in tr["class_counts"].items()}
    e_share = {c: n / max(ev["count"], 1) for c, n in ev["class_counts"].items()}
    off = [c for c in classes
           if min(tr["class_counts"][c], ev["class_counts"][c]) >= CLASS_MIN
           and not 1 / CLASS_SHARE_RATIO <= t_share[c] / e_share[c] <= CLASS_SHARE_RATIO]
    if not off:
        return []
    detail = ", ".join(f"{c} {100 * t_share[c]:.1f}% of train vs {100 * e_share[c]:.1f}% of {EVAL}" for c in off)
    return [_warning("class_balance", f"class shares differ by more than {CLASS_SHARE_RATIO:g}x: {detail}: a class "
                     "was padded with (augmented) copies or thinned out on one side",
                     {c: round(t_share[c], 4) for c in off}, {c: round(e_share[c], 4) for c in off},
                     CLASS_SHARE_RATIO)]


def _check_leakage(overlap: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluation images that are also training images (identical, or near duplicates)."""
    pairs = [p for p in overlap if p.startswith("train&")]
    n_eval = sum(overlap[p]["of"] for p in pairs)
    out = []
    for kind, limit in (("exact", LEAK_FRACTION), ("near", NEAR_LEAK_FRACTION)):
        shared = sum(overlap[p][kind] for p in pairs)
        if n_eval and shared / n_eval > limit:
            detail = ", ".join(f"{p.replace('&', ' ∩ ')}: {overlap[p][kind]}" for p in pairs)
            what = "identical to" if kind == "exact" else "near duplicates of"
            out.append(_warning(f"leakage_{kind}", f"{shared} of {n_eval} {EVAL} images ({100 * shared / n_eval:.1f}%, "
                                f"allowed {100 * limit:g}%) are {what} training images ({detail}): test accuracy "
                                "overstates accuracy on unseen faces", shared, n_eval, limit))
    return out


def _check_duplicates(splits: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Within-split duplicates: augmented or repeated copies mixed in."""
    out = []
    for s in (x for x in SPLITS if x in splits):
        sp = splits[s]
        share = sp["near_duplicates"] / max(sp["count"], 1)
        classes = sorted(((c, sp["near_duplicates_by_class"][c] / n) for c, n in sp["class_counts"].items()
                          if n >= CLASS_MIN and sp["near_duplicates_by_class"][c] / n > CLASS_DUP_FRACTION),
                         key=lambda x: -x[1])
        if share > WITHIN_DUP_FRACTION or classes:
            worst = ", ".join(f"{c} {100 * f:.0f}%" for c, f in classes)
            out.append(_warning(
                "duplicates", f"{sp['near_duplicates']} of {sp['count']} {s} images ({100 * share:.1f}%, allowed "
                f"{100 * WITHIN_DUP_FRACTION:g}%) have a near or exact twin in {s} ({sp['exact_duplicates']} exact "
                f"extra copies)" + (f"; over {100 * CLASS_DUP_FRACTION:g}% of a class: {worst}" if worst else "")
                + ": augmented or repeated copies are mixed in",
                round(share, 4) if s == "train" else None, round(share, 4) if s != "train" else None,
                WITHIN_DUP_FRACTION))
    return out


def _sizes_text(sizes: dict[str, int]) -> str:
    items = sorted(sizes.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{k} ({v})" for k, v in items[:3])
    return text + (f", +{len(items) - 3} more" if len(items) > 3 else "") if items else "none"


# ---------------------------------------------------------------- tables and files


def summary_table(card: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): one row per split and one for val+test pooled. Shared with vitedge.report."""
    headers = ["split", "images", "pixel mean", "pixel std", "sharpness median", "sharpness p10–p90",
               "size stored", "size on disk", "exact dup copies", "near-dup images"]
    rows = []
    for name, sp in card["splits"].items():
        sh = sp["sharpness"]
        rows.append([
            name, f"{sp['count']:,}", _num(sp["pixel_mean"], 1), _num(sp["pixel_std"], 1), _num(sh["median"]),
            f"{_num(sh['p10'])}–{_num(sh['p90'])}", _sizes_text(sp["stored_sizes"]),
            _sizes_text(sp["disk_sizes"]) if sp["disk_sizes"] is not None else "–",
            f"{sp['exact_duplicates']:,}" if "exact_duplicates" in sp else "–",
            f"{sp['near_duplicates']:,}" if "near_duplicates" in sp else "–",
        ])
    return headers, rows


def class_table(card: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    return ["split", *card["classes"]], [[name, *(f"{sp['class_counts'][c]:,}" for c in card["classes"])]
                                         for name, sp in card["splits"].items()]


def overlap_table(card: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per pair of splits: images of the second split with an identical / near copy in the first."""
    rows = [[pair.replace("&", " ∩ "), f"{o['exact']:,}", f"{o['near']:,}", f"{o['of']:,}"]
            for pair, o in card["overlap"].items()]
    return ["splits", "exact copies", "near duplicates", "of (second split)"], rows


def _num(v: float | None, decimals: int | None = None) -> str:
    """Table cell: "–" for unknown; whole numbers from 100 up unless decimals are asked for."""
    if v is None:
        return "–"
    if decimals is None:
        decimals = 0 if abs(v) >= 100 else 1
    return f"{v:,.{decimals}f}"


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows])


def render_markdown(card: dict[str, Any]) -> str:
    src = card.get("source") or {}
    where = f" from `{src['path']}`" if src.get("path") else ""
    md = [f"# Data card: {src.get('kind', 'unknown source')}{where}", "",
          "Per split, and for val+test pooled (what train is compared against). Sharpness is the variance "
          "of the 3x3 Laplacian per image (blur drives it towards 0); pixel values on 0..255.", "",
          _md_table(*summary_table(card)), "", "## Images per class", "", _md_table(*class_table(card)), "",
          "## Overlap between splits", "", f"Near duplicates: {card['near_duplicate_rule']}.", "",
          _md_table(*overlap_table(card)), ""]
    examples = [f"- {pair.replace('&', ' ∩ ')}: {e}" for pair, o in card["overlap"].items()
                for e in o["exact_examples"] + o["near_examples"]]
    examples += [f"- within {s}: {e}" for s, sp in card["splits"].items()
                 for e in sp.get("near_duplicate_examples", [])]
    if examples:
        md += ["Examples:", "", *examples, ""]
    md += ["## Warnings", ""]
    md += [f"- **{w['check']}**: {w['message']}" for w in card["warnings"]] or ["No warnings."]
    return "\n".join(md) + "\n"


def write_datacard(out_dir: str | Path, card: dict[str, Any]) -> tuple[Path, Path]:
    """Write `datacard.json` and `datacard.md` into out_dir, each atomically; return their paths."""
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "datacard.json", out_dir / "datacard.md"
    write_json(json_path, card)
    atomic_write_text(md_path, render_markdown(card))
    return json_path, md_path


def warn_from_datacard(data_dir: str | Path) -> list[str]:
    """Log every warning of `data_dir/datacard.json` on the "vitedge.data" logger; return their messages.

    For the training stages' startup, so the warnings reach the log people read at the
    moment they would otherwise trust the numbers. No card (older caches): nothing to say.
    """
    path = Path(data_dir) / "datacard.json"
    if not path.is_file():
        return []
    try:
        card = read_json(path)
        messages = [str(w["message"]) for w in card.get("warnings", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("cannot read the data card %s (%s); the data was not checked", path, exc)
        return []
    for m in messages:
        log.warning("data card: %s (see %s)", m, path.with_suffix(".md"))
    return messages


def main(argv: list[str] | None = None) -> int:
    """`python -m vitedge.data.datacard DATA_DIR`: build the card of an existing split cache."""
    p = argparse.ArgumentParser(prog="python -m vitedge.data.datacard",
                                description="build the data card of an existing split cache")
    p.add_argument("data_dir", type=Path, help="folder with manifest.json and <split>.npz")
    args = p.parse_args(argv)
    try:
        splits = load_splits(args.data_dir)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    card = make_datacard(splits, read_json(args.data_dir / "manifest.json").get("source") or {})
    _, md = write_datacard(args.data_dir, card)
    for w in card["warnings"]:
        print(f"WARNING: data card: [{w['check']}] {w['message']}", file=sys.stderr)
    print(f"data card: {len(card['warnings']) or 'no'} warning(s) -> {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
