"""Data sources: FER-2013 readers (folder, zip, CSV), the synthetic set, the cache and the CLI.

Everything runs on tiny files written into tmp_path, except the `fer2013`-marked test,
which reads the real Kaggle zip from ../shared/datasets when it is there.
"""
from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitedge.data import (
    CLASSES,
    SPLITS,
    DatasetError,
    load_fer2013,
    load_source,
    load_splits,
    make_synthetic,
    save_splits,
)
from vitedge.data.__main__ import main as cli_main

REPO = Path(__file__).resolve().parents[1]
FER_ZIP = (REPO / "../shared/datasets/fer2013/fer2013.zip").resolve()

# Kaggle's folder order (alphabetical) differs from CLASSES order; "Surprise" also tests case.
KAGGLE_FOLDERS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "Surprise")


def gray_of(label: int) -> int:
    """Each class gets its own flat gray level, so an image's pixels reveal its folder."""
    return 10 + 35 * label


def jpeg_bytes(value: int, size: int = 48, mode: str = "L", noise: bool = False) -> bytes:
    arr = np.full((size, size), value, np.uint8)
    if noise:  # noise makes the file long enough that cutting it truncates pixel data
        arr = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def make_kaggle_folder(root: Path) -> Path:
    """3 Training_, 2 PublicTest_, 2 PrivateTest_ images per class, plus junk that must not count."""
    for folder in KAGGLE_FOLDERS:
        value = gray_of(CLASSES.index(folder.lower()))
        for i in range(3):
            write(root / "train" / folder / f"Training_{i}.jpg", jpeg_bytes(value))
        for i in range(2):
            write(root / "test" / folder / f"PublicTest_{i}.jpg", jpeg_bytes(value))
            write(root / "test" / folder / f"PrivateTest_{i}.jpg", jpeg_bytes(value))
    # an RGB image at another size: converted to gray and resized to 48x48
    write(root / "train" / "happy" / "Training_big.jpg", jpeg_bytes(gray_of(CLASSES.index("happy")), 64, "RGB"))
    write(root / "train" / "angry" / "Training_corrupt.jpg", b"this is not a jpeg")
    write(root / "train" / "sad" / "Training_truncated.jpg", jpeg_bytes(0, noise=True)[:600])
    write(root / "train" / "notes.txt", b"not an image, ignored")
    write(root / "train" / "happy" / ".DS_Store", b"\0\0\0\1Bud1")
    return root


def zip_folder(folder: Path, dest: Path, wrapper: str = "") -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zf.write(file, wrapper + file.relative_to(folder).as_posix())
    return dest


@pytest.fixture(scope="module")
def kaggle_dir(tmp_path_factory) -> Path:
    return make_kaggle_folder(tmp_path_factory.mktemp("kaggle") / "fer2013")


@pytest.fixture(scope="module")
def kaggle_loaded(kaggle_dir):
    return load_fer2013(kaggle_dir, progress=False)


def assert_same_splits(a: dict, b: dict) -> None:
    for name in SPLITS:
        np.testing.assert_array_equal(a[name].images, b[name].images)
        np.testing.assert_array_equal(a[name].labels, b[name].labels)
        assert a[name].paths == b[name].paths


# ---------------------------------------------------------------- Kaggle layout


def test_kaggle_folder_assigns_splits_by_prefix(kaggle_loaded):
    splits, report = kaggle_loaded
    assert [len(splits[s]) for s in SPLITS] == [3 * 7 + 1, 2 * 7, 2 * 7]
    assert splits["train"].counts() == [3, 3, 3, 4, 3, 3, 3]
    assert all(p.split("/")[-1].startswith("PublicTest_") for p in splits["val"].paths)
    assert all(p.split("/")[-1].startswith("PrivateTest_") for p in splits["test"].paths)
    assert report["kind"] == "kaggle-folder"
    assert report["split_method"] == {"train": "train/", "val": "test/PublicTest_*", "test": "test/PrivateTest_*"}
    for sp in splits.values():
        assert sp.images.shape[1:] == (48, 48) and sp.images.dtype == np.uint8


def test_corrupt_images_are_skipped_and_reported_and_other_files_ignored(kaggle_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="vitedge.data"):
        _, report = load_fer2013(kaggle_dir, progress=False)
    assert report["skipped"] == 2
    skipped = " ".join(report["skipped_examples"])
    assert "Training_corrupt.jpg" in skipped and "Training_truncated.jpg" in skipped
    assert "notes.txt" not in skipped and "DS_Store" not in skipped
    warnings = [r.getMessage() for r in caplog.records if r.name == "vitedge.data"]
    assert len(warnings) == 1 and "skipped 2" in warnings[0]


def test_class_folders_map_to_classes_by_name(kaggle_loaded):
    splits, _ = kaggle_loaded
    for sp in splits.values():
        for image, label, path in zip(sp.images, sp.labels, sp.paths):
            assert CLASSES[label] == path.split("/")[-2].lower()
            assert abs(float(image.mean()) - gray_of(label)) < 3, path
    happy = splits["train"].paths.index("train/happy/Training_0.jpg")
    assert splits["train"].labels[happy] == CLASSES.index("happy")


def test_zip_reads_like_the_folder(kaggle_dir, kaggle_loaded, tmp_path):
    splits, report = load_fer2013(zip_folder(kaggle_dir, tmp_path / "fer2013.zip"), progress=False)
    assert_same_splits(splits, kaggle_loaded[0])
    assert report["kind"] == "kaggle-zip" and report["skipped"] == 2 and report["root"] == ""


def test_zip_with_a_wrapper_folder(kaggle_dir, kaggle_loaded, tmp_path):
    splits, report = load_fer2013(zip_folder(kaggle_dir, tmp_path / "w.zip", wrapper="fer2013/"), progress=False)
    assert report["root"] == "fer2013"
    for name in SPLITS:
        np.testing.assert_array_equal(splits[name].images, kaggle_loaded[0][name].images)
        assert splits[name].paths == ["fer2013/" + p for p in kaggle_loaded[0][name].paths]


@pytest.mark.parametrize(
    "entry", ["../evil.jpg", "train/happy/../../../evil.jpg", "/etc/evil.jpg", "C:/evil.jpg", "train\\..\\..\\evil.jpg"]
)
def test_unsafe_zip_entries_are_rejected(tmp_path, entry):
    dest = tmp_path / "evil.zip"
    with zipfile.ZipFile(dest, "w") as zf:
        zf.writestr("train/happy/Training_0.jpg", jpeg_bytes(100))
        zf.writestr(entry, jpeg_bytes(100))
    with pytest.raises(DatasetError, match="unsafe entry") as err:
        load_fer2013(dest, progress=False)
    assert "evil.jpg" in str(err.value)


def make_plain_folder(root: Path, n_train: int, n_test: int) -> Path:
    """Files without FER prefixes, so splits follow folders."""
    for c, name in enumerate(CLASSES):
        for i in range(n_train):
            write(root / "train" / name / f"img{i}.jpg", jpeg_bytes(gray_of(c)))
        for i in range(n_test):
            write(root / "test" / name / f"img{i}.jpg", jpeg_bytes(gray_of(c)))
    return root


def test_unprefixed_test_folder_is_halved_stratified_and_deterministic(tmp_path):
    root = make_plain_folder(tmp_path / "plain", n_train=2, n_test=4)
    first, report = load_fer2013(root, seed=3, progress=False)
    again, _ = load_fer2013(root, seed=3, progress=False)
    assert_same_splits(first, again)
    assert first["train"].counts() == [2] * 7
    assert first["val"].counts() == [2] * 7 and first["test"].counts() == [2] * 7
    assert sorted(first["val"].paths + first["test"].paths) == sorted(
        f"test/{c}/img{i}.jpg" for c in CLASSES for i in range(4)
    )
    assert "half" in report["split_method"]["val"]
    other_seeds = [load_fer2013(root, seed=s, progress=False)[0]["val"].paths for s in (4, 5)]
    assert any(paths != first["val"].paths for paths in other_seeds)


def test_without_test_folder_val_and_test_are_carved_from_train(tmp_path):
    root = make_plain_folder(tmp_path / "plain", n_train=10, n_test=0)
    splits, report = load_fer2013(root, val_fraction=0.2, progress=False)
    assert [sp.counts() for sp in splits.values()] == [[6] * 7, [2] * 7, [2] * 7]
    all_paths = [p for sp in splits.values() for p in sp.paths]
    assert len(set(all_paths)) == len(all_paths) == 70
    assert "carved from train" in report["split_method"]["test"]


@pytest.mark.parametrize("how", ["no folder", "only corrupt files"])
def test_a_class_without_training_images_is_an_error(tmp_path, how):
    root = make_plain_folder(tmp_path / "plain", n_train=2, n_test=2)
    for file in (root / "train" / "disgust").iterdir():
        file.unlink()
    if how == "only corrupt files":
        write(root / "train" / "disgust" / "broken.jpg", b"garbage")
    else:
        (root / "train" / "disgust").rmdir()
    with pytest.raises(DatasetError, match="disgust"):
        load_fer2013(root, progress=False)


def test_missing_train_split_is_an_error(tmp_path):
    root = make_plain_folder(tmp_path / "plain", n_train=0, n_test=2)
    with pytest.raises(DatasetError, match="train"):
        load_fer2013(root, progress=False)


def test_folder_holding_only_the_zip_points_at_it(kaggle_dir, tmp_path):
    zip_folder(kaggle_dir, tmp_path / "fer2013.zip")
    with pytest.raises(DatasetError, match="did you mean .*fer2013.zip"):
        load_fer2013(tmp_path, progress=False)


def test_unknown_class_folder_is_an_error(tmp_path):
    root = make_plain_folder(tmp_path / "plain", n_train=2, n_test=0)
    write(root / "train" / "contempt" / "img0.jpg", jpeg_bytes(50))
    with pytest.raises(DatasetError, match="contempt"):
        load_fer2013(root, progress=False)


# ---------------------------------------------------------------- CSV


def csv_row(code, usage: str, pixels: np.ndarray | str) -> str:
    if not isinstance(pixels, str):
        pixels = " ".join(map(str, pixels.ravel()))
    return f'{code},"{pixels}",{usage}\n'


def test_csv_reader_maps_usage_and_skips_bad_rows(tmp_path, caplog):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (9, 48, 48))
    rows = [csv_row(c, "Training", images[c]) for c in range(7)]
    rows += [csv_row(3, "PublicTest", images[7]), csv_row(5, "PrivateTest", images[8])]
    rows += [
        csv_row(0, "Training", images[0].ravel()[:-1]),  # 2303 values
        csv_row(0, "Training", "256 " * 2304),  # out of range
        csv_row(7, "Training", images[0]),  # no such emotion
        csv_row("x", "Training", images[0]),
    ]
    path = tmp_path / "fer2013.csv"
    path.write_text("emotion,pixels,Usage\n" + "".join(rows))
    with caplog.at_level(logging.WARNING, logger="vitedge.data"):
        splits, report = load_fer2013(path, progress=False)
    assert report["kind"] == "csv" and report["skipped"] == 4
    assert len(report["skipped_examples"]) == 4 and "fer2013.csv:11" in report["skipped_examples"][0]
    assert sum("skipped 4" in r.getMessage() for r in caplog.records) == 1
    assert splits["train"].labels.tolist() == list(range(7))  # codes are already CLASSES indices
    np.testing.assert_array_equal(splits["train"].images, images[:7].astype(np.uint8))
    assert splits["val"].labels.tolist() == [3] and splits["test"].labels.tolist() == [5]
    np.testing.assert_array_equal(splits["test"].images[0], images[8])


def test_csv_missing_usage_is_an_error(tmp_path):
    path = tmp_path / "fer2013.csv"
    pixels = np.zeros(2304, int)
    path.write_text("emotion,pixels,Usage\n" + csv_row(0, "Training", pixels) + csv_row(1, "", pixels))
    with pytest.raises(DatasetError, match="Usage"):
        load_fer2013(path, progress=False)


# ---------------------------------------------------------------- synthetic


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(per_class=150, seed=0)


def test_synthetic_shapes_counts_and_determinism(synthetic):
    assert synthetic["train"].counts() == [150, 50, 150, 150, 150, 150, 150]  # disgust is rarer
    assert synthetic["val"].counts() == synthetic["test"].counts() == [37] * 7
    for sp in synthetic.values():
        assert sp.images.shape[1:] == (48, 48) and sp.images.dtype == np.uint8
        assert sp.labels.dtype == np.int64 and len(sp.paths) == len(sp)
    small = make_synthetic(per_class=12, seed=1, val_per_class=3, test_per_class=5)
    again = make_synthetic(per_class=12, seed=1, val_per_class=3, test_per_class=5)
    other = make_synthetic(per_class=12, seed=2, val_per_class=3, test_per_class=5)
    assert_same_splits(small, again)
    assert not np.array_equal(small["train"].images, other["train"].images)
    assert len(small["val"]) == 21 and len(small["test"]) == 35
    assert make_synthetic(per_class=12, seed=0, size=32)["train"].images.shape[1:] == (32, 32)


def test_synthetic_is_learnable_but_not_trivial(synthetic):
    """A linear softmax classifier on standardised pixels: well above chance, far from perfect."""

    def features(images):  # 2x2-pooled (24x24) keeps the matrix products cheap on a busy CPU
        x = images.reshape(len(images), 24, 2, 24, 2).mean((2, 4)).reshape(len(images), -1).astype(np.float32)
        return (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)

    train, test = synthetic["train"], synthetic["test"]
    x, onehot = features(train.images), np.eye(len(CLASSES), dtype=np.float32)[train.labels]
    w = np.zeros((x.shape[1], len(CLASSES)), np.float32)
    for _ in range(150):  # full-batch gradient descent on the cross-entropy
        z = x @ w
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w -= 0.5 * (x.T @ (p - onehot) / len(x) + 1e-3 * w)
    accuracy = float(((features(test.images) @ w).argmax(1) == test.labels).mean())
    assert 0.30 < accuracy < 0.95, accuracy  # 0.49 at the time of writing; 1/7 is chance


# ---------------------------------------------------------------- cache, dispatch, CLI


def test_save_and_load_splits_round_trip(kaggle_loaded, tmp_path):
    splits, report = kaggle_loaded
    manifest = save_splits(tmp_path / "cache", splits, source=report)
    assert manifest["splits"]["train"]["class_counts"]["happy"] == 4
    assert_same_splits(load_splits(tmp_path / "cache"), splits)


def test_load_source_dispatch(kaggle_dir, kaggle_loaded, tmp_path):
    splits, report = load_source("synthetic", per_class=8, seed=0)
    assert report["kind"] == "synthetic" and splits["train"].counts()[0] == 8
    assert_same_splits(load_source(str(kaggle_dir), progress=False)[0], kaggle_loaded[0])
    with pytest.raises(DatasetError, match="fer2013.zip"):
        load_source(str(tmp_path / "missing.zip"))


def test_cli_writes_the_cache_and_prints_a_summary(kaggle_dir, tmp_path, capsys):
    out = tmp_path / "cache"
    assert cli_main(["--source", str(kaggle_dir), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in printed.splitlines()[1:]}
    assert "2 skipped" in printed and rows["train"][0] == "22" and rows["val"][0] == "14"
    assert {p.name for p in out.iterdir()} == {"manifest.json", "train.npz", "val.npz", "test.npz",
                                               "datacard.json", "datacard.md"}
    assert len(load_splits(out)["val"]) == 14


def test_cli_dataset_error_is_one_line_and_exit_code_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", "vitedge.data", "--source", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- the real data


@pytest.mark.fer2013
def test_real_fer2013_zip():
    if not FER_ZIP.is_file():
        pytest.skip(f"FER-2013 zip not found at {FER_ZIP} (see ../shared/datasets/README.md)")
    splits, report = load_fer2013(FER_ZIP, progress=False)
    assert [len(splits[s]) for s in SPLITS] == [28709, 3589, 3589]
    expected_train = {"angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "neutral": 4965, "sad": 4830,
                      "surprise": 3171}
    assert report["counts"]["train"] == {c: expected_train[c] for c in CLASSES}
    assert report["skipped"] == 0
    assert splits["train"].images.shape == (28709, 48, 48)
