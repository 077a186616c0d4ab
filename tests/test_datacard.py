"""The data card (vitedge.data.datacard): it must flag the broken copies of FER-2013 in circulation.

Everything runs on small synthetic faces (make_synthetic) in memory or written as a tiny
fer2013.csv / Kaggle folder into tmp_path, except the `fer2013`-marked test, which builds the
card of the real zip in ../shared/datasets when it is there.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from vitedge.data import CLASSES, SPLITS, Split, load_fer2013, make_synthetic
from vitedge.data.__main__ import main as data_main
from vitedge.data.datacard import (
    EVAL,
    NEAR_HAMMING,
    make_datacard,
    near_pairs,
    warn_from_datacard,
    write_datacard,
)

USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


@pytest.fixture(scope="module")
def clean() -> dict[str, Split]:
    return make_synthetic(per_class=60, seed=0)


def copy(splits: dict[str, Split]) -> dict[str, Split]:
    """Independent copies, so a test can plant things without touching the shared fixture."""
    return {k: Split(sp.images.copy(), sp.labels.copy(), list(sp.paths)) for k, sp in splits.items()}


def with_train(splits: dict[str, Split], images: np.ndarray, labels: np.ndarray | None = None) -> dict[str, Split]:
    tr = splits["train"]
    labels = tr.labels if labels is None else labels
    return {**splits, "train": Split(images, labels, [f"x/{i}" for i in range(len(labels))])}


def blur(images: np.ndarray, radius: float = 1.5) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(radius))) for im in images])


def checks(card: dict) -> list[str]:
    return [w["check"] for w in card["warnings"]]


# ---------------------------------------------------------------- (1) a clean set


def test_clean_set_has_no_warnings_and_describes_every_split(clean):
    card = make_datacard(clean, {"kind": "synthetic", "seed": 0})
    assert card["warnings"] == [], card["warnings"]
    assert list(card["splits"]) == [*SPLITS, EVAL]
    for name in SPLITS:
        sp = card["splits"][name]
        assert sp["count"] == len(clean[name])
        assert sp["class_counts"] == dict(zip(CLASSES, clean[name].counts()))
        assert sp["pixel_mean"] == pytest.approx(clean[name].images.mean(), abs=0.01)
        assert sp["pixel_std"] == pytest.approx(clean[name].images.std(), abs=0.01)
        assert 0 < sp["sharpness"]["p10"] < sp["sharpness"]["median"] < sp["sharpness"]["p90"]
        assert sp["stored_sizes"] == {"48x48": len(clean[name])} and sp["disk_sizes"] is None
        assert sp["exact_duplicates"] == 0 and sp["near_duplicates"] == 0
    assert card["splits"][EVAL]["count"] == len(clean["val"]) + len(clean["test"])
    assert {k: (v["exact"], v["near"]) for k, v in card["overlap"].items()} == {
        "train&val": (0, 0), "train&test": (0, 0), "val&test": (0, 0)}
    json.dumps(card)  # plain JSON, as written to datacard.json


# ---------------------------------------------------------------- (2) a blurred training split


def test_blurred_training_split_gives_a_sharpness_warning(clean):
    card = make_datacard(with_train(clean, blur(clean["train"].images)), {"kind": "synthetic"})
    assert checks(card) == ["sharpness"], card["warnings"]
    w = card["warnings"][0]
    assert set(w) == {"check", "message", "train", "eval", "threshold"}
    assert w["train"] < w["eval"] / w["threshold"]
    assert "blurred" in w["message"]
    # the other way round (evaluation data blurred) is just as wrong
    evil = {**clean, "test": Split(blur(clean["test"].images, 2.5), clean["test"].labels),
            "val": Split(blur(clean["val"].images, 2.5), clean["val"].labels)}
    assert checks(make_datacard(evil, {})) == ["sharpness"]


def write_csv(path: Path, splits: dict[str, Split]) -> Path:
    """fer2013.csv (emotion,pixels,Usage) holding the given splits."""
    rows = ["emotion,pixels,Usage\n"]
    for name, sp in splits.items():
        rows += [f'{label},"{" ".join(map(str, img.ravel()))}",{USAGE[name]}\n'
                 for img, label in zip(sp.images, sp.labels)]
    path.write_text("".join(rows))
    return path


@pytest.fixture(scope="module")
def small() -> dict[str, Split]:
    return make_synthetic(per_class=30, seed=1)


def test_cli_prints_warnings_loudly_and_strict_makes_them_an_error(small, tmp_path, capsys, caplog):
    csv = write_csv(tmp_path / "fer2013.csv", with_train(small, blur(small["train"].images)))

    out = tmp_path / "strict"
    assert data_main(["--source", str(csv), "--out", str(out), "--no-progress", "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data card: ") and len(err.strip().splitlines()) == 1, err
    assert "sharpness" in err and "Traceback" not in err
    assert not (out / "manifest.json").exists()  # splits refused ...
    assert (out / "datacard.json").is_file()  # ... but the card says why

    out = tmp_path / "lenient"
    assert data_main(["--source", str(csv), "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "WARNING: data card: [sharpness]" in captured.err
    assert "misleading results" in captured.err
    assert "data card: 1 warning(s)" in captured.out
    assert {p.name for p in out.iterdir()} == {"manifest.json", "train.npz", "val.npz", "test.npz",
                                               "datacard.json", "datacard.md"}
    card = json.loads((out / "datacard.json").read_text())
    assert [w["check"] for w in card["warnings"]] == ["sharpness"]
    assert card["source"]["kind"] == "csv"
    assert card["splits"]["train"]["disk_sizes"] == {"48x48": len(small["train"])}  # the CSV loader's report
    md = (out / "datacard.md").read_text()
    assert "| train |" in md and "## Warnings" in md and "**sharpness**" in md

    # training stages re-log the warnings at startup
    with caplog.at_level(logging.WARNING, logger="vitedge.data"):
        messages = warn_from_datacard(out)
    assert messages == [card["warnings"][0]["message"]]
    assert any(r.name == "vitedge.data" and "sharpness" in r.getMessage() for r in caplog.records)


def test_cli_on_clean_data_is_quiet_even_when_strict(small, tmp_path, capsys):
    csv = write_csv(tmp_path / "fer2013.csv", small)
    out = tmp_path / "cache"
    assert data_main(["--source", str(csv), "--out", str(out), "--no-progress", "--strict"]) == 0
    captured = capsys.readouterr()
    assert "WARNING" not in captured.err and "data card: no warning(s)" in captured.out
    assert "No warnings." in (out / "datacard.md").read_text()
    assert warn_from_datacard(out) == []


def test_warn_from_datacard_without_or_with_a_broken_card(tmp_path, caplog):
    assert warn_from_datacard(tmp_path) == []  # caches written before data cards existed
    (tmp_path / "datacard.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="vitedge.data"):
        assert warn_from_datacard(tmp_path) == []
    assert any("cannot read the data card" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- (3) duplicates


def test_exact_and_near_duplicates_are_counted(clean):
    rng = np.random.default_rng(0)
    s = copy(clean)
    tr, te, va = s["train"].images, s["test"].images, s["val"].images
    te[5] = tr[0]  # exact copy across train and test
    noise = rng.integers(-1, 2, tr[1].shape)  # +-1 grey level: not identical, the same picture
    te[6] = np.clip(tr[1].astype(int) + noise, 0, 255).astype(np.uint8)
    assert not np.array_equal(te[6], tr[1])
    te[7] = tr[2][:, ::-1]  # a mirrored copy: the commonest augmentation
    va[3] = va[4]  # exact copy within val
    card = make_datacard(s, {})
    o = card["overlap"]
    assert o["train&test"]["exact"] == 1 and o["train&test"]["near"] == 3  # near includes the exact copy
    assert o["train&val"] == {**o["train&val"], "exact": 0, "near": 0}
    assert o["train&test"]["exact_examples"] == ["synthetic:train/00000 == synthetic:test/00005"]
    assert set(o["train&test"]["near_examples"]) == {"synthetic:train/00001 ~ synthetic:test/00006",
                                                     "synthetic:train/00002 ~ synthetic:test/00007"}
    assert card["splits"]["val"]["exact_duplicates"] == 1 and card["splits"]["val"]["near_duplicates"] == 2
    assert card["splits"]["train"]["exact_duplicates"] == 0
    assert card["warnings"] == []  # 1 of 180 eval images: noted, below the leakage threshold


def test_leakage_above_the_threshold_warns(clean):
    s = copy(clean)
    s["test"].images[:10] = s["train"].images[:10]  # 10 of 210 eval images (4.8%)
    card = make_datacard(s, {})
    assert checks(card) == ["leakage_exact"]
    assert card["warnings"][0]["train"] == 10 and card["warnings"][0]["eval"] == len(s["val"]) + len(s["test"])


def test_augmented_copies_of_one_class_warn(clean):
    """A "balanced" copy: disgust padded with flipped and brightened copies of its own images."""
    tr = clean["train"]
    disgust = tr.images[tr.labels == CLASSES.index("disgust")]
    extra = np.concatenate([disgust[:, :, ::-1], np.clip(disgust.astype(int) + 12, 0, 255).astype(np.uint8),
                            np.clip(disgust[:, :, ::-1].astype(int) - 12, 0, 255).astype(np.uint8)])
    images = np.concatenate([tr.images, extra])
    labels = np.concatenate([tr.labels, np.full(len(extra), CLASSES.index("disgust"))])
    card = make_datacard(with_train(clean, images, labels), {})
    assert "duplicates" in checks(card) and "disgust" in card["warnings"][checks(card).index("duplicates")]["message"]
    assert card["splits"]["train"]["near_duplicates_by_class"]["disgust"] == 4 * len(disgust)


def test_near_pairs_matches_brute_force():
    """Random hashes plus partners exactly NEAR_HAMMING bits away (must be found, wherever the bits
    fall) and NEAR_HAMMING + 1 bits away (must not), checked against all N^2 distances."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 300, dtype=np.uint64)

    def flipped(n_bits: int) -> np.ndarray:
        masks = [sum(1 << int(b) for b in rng.choice(64, n_bits, replace=False)) for _ in base]
        return base ^ np.array(masks, dtype=np.uint64)

    hashes = np.concatenate([base, flipped(NEAR_HAMMING), flipped(NEAR_HAMMING + 1), np.zeros(5, np.uint64)])
    got = {tuple(p) for p in near_pairs(hashes).tolist()}
    bits = np.unpackbits(hashes.view(np.uint8).reshape(-1, 8), axis=1).astype(bool)
    dist = (bits[:, None, :] != bits[None, :, :]).sum(axis=2)
    want = set(zip(*np.nonzero(np.triu(dist <= NEAR_HAMMING, k=1))))
    assert got == {(int(i), int(j)) for i, j in want}
    assert {(i, 300 + i) for i in range(300)} <= got and not any((i, 600 + i) in got for i in range(300))
    assert {(900 + i, 900 + j) for i in range(5) for j in range(i + 1, 5)} <= got  # the equal hashes


# ---------------------------------------------------------------- (4) resampled or re-graded copies


def upsample(images: np.ndarray, size: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in images])


def test_upsampled_training_split_warns_about_size(clean):
    card = make_datacard(with_train(clean, upsample(clean["train"].images, 96)), {})
    assert "image_size" in checks(card)
    assert card["splits"]["train"]["stored_sizes"] == {"96x96": len(clean["train"])}
    # sizes on disk, from the loader's report, win over the stored (resized) ones
    sizes = {"train": {"224x224": len(clean["train"])}, "val": {"48x48": len(clean["val"])},
             "test": {"48x48": len(clean["test"])}}
    card = make_datacard(clean, {"image_sizes": sizes})
    assert checks(card) == ["image_size"] and "on disk" in card["warnings"][0]["message"]


def test_fer_loader_records_sizes_on_disk_so_a_224px_copy_shows(small, tmp_path):
    """The loader resizes everything to 48x48; its report keeps the sizes the files had."""
    root = tmp_path / "fer2013"
    for name, sp in small.items():
        for i, (img, label) in enumerate(zip(sp.images, sp.labels)):
            folder = "train" if name == "train" else "test"
            path = root / folder / CLASSES[label] / f"{USAGE[name]}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(upsample(img[None], 224)[0] if name == "train" else img).save(path)
    splits, report = load_fer2013(root, progress=False)
    assert report["image_sizes"] == {"train": {"224x224": len(small["train"])}, "val": {"48x48": len(small["val"])},
                                     "test": {"48x48": len(small["test"])}}
    assert splits["train"].images.shape[1:] == (48, 48)
    card = make_datacard(splits, report)
    assert "image_size" in checks(card) and "224x224" in card["warnings"][checks(card).index("image_size")]["message"]


def test_contrast_and_brightness_changes_warn(clean):
    x = clean["train"].images.astype(np.float64)
    stretched = np.clip((x - x.mean()) * 1.6 + x.mean(), 0, 255).astype(np.uint8)
    card = make_datacard(with_train(clean, stretched), {})
    assert "pixel_std" in checks(card) and "pixel_mean" not in checks(card)
    brighter = np.clip(x + 30, 0, 255).astype(np.uint8)
    assert checks(make_datacard(with_train(clean, brighter), {})) == ["pixel_mean"]


def test_class_padded_in_train_only_warns(clean):
    """FER-like shares (disgust rare in every split), then disgust padded in train only."""
    pool = make_synthetic(per_class=80, seed=5)["train"]  # the same class shares as a train split
    half = np.arange(len(pool)) % 2 == 0
    splits = {"train": clean["train"], "val": pool.subset(np.flatnonzero(half)),
              "test": pool.subset(np.flatnonzero(~half))}
    assert checks(make_datacard(splits, {})) == []
    tr, disgust = clean["train"], CLASSES.index("disgust")
    # new, different disgust images (another seed): not duplicates, only far too many of them
    more = make_synthetic(per_class=600, seed=7)["train"]
    new = np.flatnonzero(more.labels == disgust)[: 8 * int((tr.labels == disgust).sum())]
    padded = with_train(splits, np.concatenate([tr.images, more.images[new]]),
                        np.concatenate([tr.labels, more.labels[new]]))
    card = make_datacard(padded, {})
    assert checks(card) == ["class_balance"] and "disgust" in card["warnings"][0]["message"]


# ---------------------------------------------------------------- files and the report


def test_write_datacard_files_and_report_section(clean, tmp_path):
    from vitedge.report import main as report_main
    from vitedge.validation_rows import ValidationResult

    card = make_datacard(with_train(clean, blur(clean["train"].images)), {"kind": "synthetic"})
    run = tmp_path / "run"
    json_path, md_path = write_datacard(run / "data", card)
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(card))
    assert not list((run / "data").glob(".*tmp"))  # atomic writes leave no temporaries
    md = md_path.read_text()
    for row in ("| train |", "| val |", "| test |", f"| {EVAL} |"):
        assert row in md

    result = ValidationResult(model="student", format="onnx", precision="fp32", target="cpu", status="skipped",
                              reason="not here", machine_line="test")
    (tmp_path / "v.json").write_text(json.dumps(result.to_dict()))
    # the card is found in the run folder (--out-dir's parent), as the workflow lays it out
    assert report_main(["write", str(tmp_path / "v.json"), "--out-dir", str(run / "report")]) == 0
    html = (run / "report" / "index.html").read_text()
    report_md = (run / "report" / "report.md").read_text()
    assert "<h2>Data card</h2>" in html and "## Data card" in report_md
    assert "sharpness" in html and "- WARNING sharpness:" in report_md
    assert "| train |" in report_md
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    assert [w["check"] for w in metrics["data_warnings"]] == ["sharpness"]
    # no card, no section
    assert report_main(["write", str(tmp_path / "v.json"), "--out-dir", str(tmp_path / "alone" / "report")]) == 0
    assert "Data card" not in (tmp_path / "alone" / "report" / "index.html").read_text()


# ---------------------------------------------------------------- the real data


@pytest.mark.fer2013
def test_real_fer2013_card(fer_zip, capsys):
    splits, report = load_fer2013(fer_zip, progress=False)
    start = time.perf_counter()
    card = make_datacard(splits, report)
    seconds = time.perf_counter() - start
    sp = card["splits"]
    with capsys.disabled():
        print(f"\nFER-2013 data card in {seconds:.1f} s: sharpness median train {sp['train']['sharpness']['median']}, "
              f"val {sp['val']['sharpness']['median']}, test {sp['test']['sharpness']['median']}; exact dup copies "
              f"{[sp[s]['exact_duplicates'] for s in SPLITS]}; overlap "
              f"{ {k: (v['exact'], v['near']) for k, v in card['overlap'].items()} }; warnings {checks(card)}")
    assert "sharpness" not in checks(card), card["warnings"]
    assert [sp[s]["count"] for s in SPLITS] == [28709, 3589, 3589]
    assert all(sp[s]["disk_sizes"] == {"48x48": sp[s]["count"]} for s in SPLITS)
    assert seconds < 60
