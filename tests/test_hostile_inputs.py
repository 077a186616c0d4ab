"""Hostile or broken inputs never run code, exhaust memory or print a traceback (issue 23).

Every case is one line on stderr and a documented exit code: `infer` 3 for a model that cannot
be used (the artefact contract, `vitedge.artefact.check_meta`), the stage commands 2."""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitedge import checkpoints, evaluate, infer
from vitedge.data import CLASSES, DatasetError, load_splits, make_synthetic, save_splits
from vitedge.data import __main__ as data_main
from vitedge.data.fer2013 import load_fer2013
from vitedge.model import create_model
from vitedge.preprocess import Preprocess
from vitedge.torch_io import save_torch

REPO = Path(__file__).resolve().parents[1]
SHIPPED_ONNX = REPO / "vitedge" / "assets" / "model" / "onnx-int8"


@pytest.fixture()
def art(tmp_path) -> Path:
    """A copy of the shipped ONNX artefact, to break."""
    return Path(shutil.copytree(SHIPPED_ONNX, tmp_path / "art"))


@pytest.fixture(scope="module")
def face(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)).save(path)
    return path


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _edit(art: Path, **changes) -> None:
    meta = json.loads((art / "meta.json").read_text())
    for key, value in changes.items():
        if "__" in key:
            outer, inner = key.split("__")
            meta[outer][inner] = value
        else:
            meta[key] = value
    (art / "meta.json").write_text(json.dumps(meta))


# --------------------------------------------------------------------------- meta.json: the artefact contract
@pytest.mark.parametrize("changes, says", [
    ({"preprocess__img_size": 100000}, "preprocess.img_size"),
    ({"preprocess__std": 0}, "preprocess.std"),
    ({"preprocess": [48, 0.5, 0.5]}, "preprocess must be an object"),
    ({"classes": ["angry", "happy"]}, "'classes' names 2 classes but the output has 7"),
    ({"classes": "angry"}, "'classes' must be a list"),
    ({"file": None}, "'file' must be a plain file name"),
    ({"file": 7}, "'file' must be a plain file name"),
    ({"file": "../art/model.onnx"}, "'file' must be a plain file name"),
    ({"input": "x"}, "'input' must be a dict"),
    ({"input__shape": [-1, 1, 96, 96]}, "does not match the preprocessing"),
    ({"output__shape": [-1, 1e9]}, "'output.shape'"),
    ({"format": {"a": 1}}, "'format' must be a format name"),
    ({"size_bytes": "big"}, "'size_bytes'"),
    ({"bs1_threads": []}, "'bs1_threads' must be a dict"),
])
def test_meta_json_violations_are_one_line_and_exit_3(capsys, art, face, changes, says):
    _edit(art, **changes)
    code = infer.main(["--no-detect", "--model", str(art), str(face)])
    err = capsys.readouterr().err
    assert code == infer.EXIT_MODEL_ERROR and says in _one_line(err), err


@pytest.mark.parametrize("text, says", [("[1, 2]", "not a JSON object"), ("[" * 100_000 + "]" * 100_000, "nested deeper"),
                                        ('{"a": ' * 40 + "1" + "}" * 40, "nested deeper"), ("\xff\xfe", "cannot read")])
def test_meta_json_that_is_not_an_object_or_too_deep(capsys, art, face, text, says):
    (art / "meta.json").write_bytes(text.encode("latin-1"))
    code = infer.main(["--no-detect", "--model", str(art), str(face)])
    assert code == 3 and says in _one_line(capsys.readouterr().err)


def test_model_file_linked_outside_the_artefact_is_refused(capsys, art, face, tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(art / "model.onnx", outside)
    os.symlink(outside, art / "model.onnx")
    code = infer.main(["--no-detect", "--model", str(art), str(face)])
    assert code == 3 and "leads outside the artefact folder" in _one_line(capsys.readouterr().err)


def test_the_shipped_artefacts_meet_the_contract(capsys, face):
    assert infer.main(["--no-detect", "--model", str(SHIPPED_ONNX), str(face)]) == 0


def test_preprocess_bounds():
    with pytest.raises(ValueError, match="img_size"):
        Preprocess(img_size=1025)
    with pytest.raises(ValueError, match="std"):
        Preprocess(std=0.0)
    with pytest.raises(ValueError, match="mean"):
        Preprocess.from_dict({"img_size": 48, "mean": float("inf"), "std": 0.5})
    assert Preprocess.from_dict({"img_size": 48.0, "mean": 0, "std": 1}) == Preprocess(48, 0.0, 1.0)


def test_generated_meta_json_and_images_never_crash_infer_within_bounded_memory(tmp_path):
    """Hypothesis, in a subprocess limited to 8 GB of address space (torch and onnxruntime map ~4 GB;
    `img_size: 100000` once grew to 23 GB): exit code in {0,1,2,3}, no traceback."""
    pytest.importorskip("hypothesis")
    limit = 8 << 30

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    run = subprocess.run([sys.executable, str(REPO / "tests" / "hostile_infer_property.py"), str(SHIPPED_ONNX), "30"],
                         capture_output=True, text=True, timeout=900, cwd=REPO, preexec_fn=cap,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stdout[-3000:] + run.stderr[-3000:]


# --------------------------------------------------------------------------- checkpoints
def _ckpt(tmp_path: Path, name: str, **changes) -> Path:
    torch.manual_seed(0)
    model = create_model("vit-nano-48", depth=1)
    ckpt = {"format": checkpoints.FORMAT, "config": model.cfg.as_dict(), "state_dict": model.state_dict(),
            "preprocess": Preprocess().as_dict(), "classes": list(CLASSES), "meta": {}}
    for key, value in changes.items():
        if "__" in key:
            outer, inner = key.split("__")
            ckpt[outer] = {**ckpt[outer], inner: value}
        else:
            ckpt[key] = value
    path = tmp_path / f"{name}.pt"
    save_torch(ckpt, path)
    return path


BAD_CHECKPOINTS = [
    ({"config__embed_dim": "wide"}, "ViTConfig.embed_dim must be int"),
    ({"config__depth": 10**9}, "outside 0.."),
    ({"config__colour": 1}, r"ViTConfig: unknown key"),
    ({"config": [1, 2]}, "must be a JSON object"),
    ({"config__num_classes": 5}, "'classes' must name the model's 5 outputs"),
    ({"config__embed_dim": 192, "config__num_heads": 3}, "do not fit the checkpoint's own config"),
    ({"preprocess__img_size": 100000}, "preprocess.img_size"),
    ({"preprocess__std": 0.0}, "preprocess.std"),
    ({"classes": ["a"] * 6}, "'classes'"),
]


@pytest.mark.parametrize("changes, says", BAD_CHECKPOINTS)
def test_bad_checkpoints_in_evaluate_are_one_line_and_exit_2(capsys, tmp_path, changes, says):
    path = _ckpt(tmp_path, "bad", **changes)
    code = evaluate.main(["--model", str(path), "--data", "synthetic", "--split", "test"])
    err = capsys.readouterr().err
    assert code == 2 and says in _one_line(err), err


@pytest.mark.parametrize("changes, says", BAD_CHECKPOINTS[:3] + BAD_CHECKPOINTS[5:6])
def test_bad_checkpoints_as_teacher_or_init_are_checkpoint_errors(tmp_path, changes, says):
    from vitedge.distill import load_teacher

    path = _ckpt(tmp_path, "bad", **changes)
    with pytest.raises(checkpoints.CheckpointError, match=says.split("'")[0][:20]):
        load_teacher(path)
    with pytest.raises(checkpoints.CheckpointError):
        checkpoints.import_pretrained(path, create_model("vit-nano-48"))
    save_torch({"head.weight": torch.zeros(3)}, tmp_path / "other.pt")  # a state dict of no known ViT
    with pytest.raises(checkpoints.CheckpointError, match="cannot import these weights"):
        checkpoints.import_pretrained(tmp_path / "other.pt", create_model("vit-nano-48"))


def test_bad_init_in_a_stage_command_is_one_line_exit_2(capsys, tmp_path):
    from vitedge.finetune import main as train_main

    data = tmp_path / "data"
    save_splits(data, make_synthetic(per_class=3, seed=0), source={"kind": "synthetic"})
    bad = _ckpt(tmp_path, "bad", config__embed_dim="wide")
    code = train_main(["--data", str(data), "--out", str(tmp_path / "m.pt"), "--init", str(bad), "--epochs", "1"])
    assert code == 2 and "ViTConfig.embed_dim" in _one_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- the data stage
def _data(capsys, *argv: str) -> tuple[int, str]:
    code = data_main.main(["--no-progress", *argv])
    return code, capsys.readouterr().err


def test_csv_with_a_huge_field_or_not_utf8_is_one_line(capsys, tmp_path):
    huge = tmp_path / "huge.csv"
    huge.write_text("emotion,pixels,Usage\n0," + "1 " * 100_000 + ",Training\n")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"emotion,pixels,Usage\n0,\xff\xfe,Training\n")
    for src, says in ((huge, "malformed CSV"), (latin, "not UTF-8")):
        code, err = _data(capsys, "--source", str(src), "--out", str(tmp_path / "out"))
        assert code == 2 and says in _one_line(err)


def test_out_under_a_file_or_proc_is_one_line(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file" / "data", Path("/proc/vitedge-data"), tmp_path / "file"):
        code, err = _data(capsys, "--source", "synthetic", "--per-class", "20", "--out", str(out))
        assert code == 2 and _one_line(err)


def test_out_holding_other_files_is_not_replaced(capsys, tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    code, err = _data(capsys, "--source", "synthetic", "--per-class", "20", "--out", str(tmp_path))
    assert code == 2 and "holds other files" in _one_line(err) and (tmp_path / "mine.txt").is_file()


def _png16(path: Path, width: int, height: int) -> None:
    """A small 16-bit grayscale PNG whose header declares width x height (its pixels compress to nothing)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    comp = zlib.compressobj()
    row = b"\0" * (1 + 2 * width)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def _fer_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, prefix in (("train", "Training"), ("test", "PublicTest"), ("test", "PrivateTest")):
        for c in CLASSES:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(d / f"{prefix}_{i}.png")
    return root


def test_an_image_declaring_too_many_pixels_is_skipped_undecoded(tmp_path):
    root = _fer_folder(tmp_path / "fer")
    _png16(root / "train" / "happy" / "Training_bomb.png", 12000, 12000)
    assert (root / "train" / "happy" / "Training_bomb.png").stat().st_size < 1 << 20
    splits, report = load_fer2013(root, progress=False)
    assert report["skipped"] == 1 and "12000x12000 pixels" in report["skipped_examples"][0]
    assert len(splits["train"]) + len(splits["val"]) + len(splits["test"]) == 7 * 9


def test_folder_reader_refuses_links_out_of_the_dataset(tmp_path):
    root = _fer_folder(tmp_path / "fer")
    secret = tmp_path / "secret.png"
    Image.new("L", (48, 48)).save(secret)
    os.symlink(secret, root / "train" / "sad" / "Training_link.png")
    with pytest.raises(DatasetError, match="outside the dataset folder"):
        load_fer2013(root, progress=False)


def test_load_splits_verifies_checksums(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    save_splits(a, make_synthetic(per_class=3, seed=0), source={"kind": "synthetic"})
    save_splits(b, make_synthetic(per_class=3, seed=1), source={"kind": "synthetic"})
    shutil.copy(b / "train.npz", a / "train.npz")  # same count, another dataset's images
    with pytest.raises(DatasetError, match="checksum"):
        load_splits(a)
    (a / "manifest.json").write_text("[")
    with pytest.raises(DatasetError, match="not a vitedge data manifest"):
        load_splits(a)


def test_data_folder_is_replaced_whole_and_strict_failure_leaves_no_splits(capsys, tmp_path, monkeypatch):
    out = tmp_path / "data"
    assert _data(capsys, "--source", "synthetic", "--per-class", "20", "--out", str(out))[0] == 0
    before = load_splits(out)

    def killed(*args, **kwargs):  # the process dies after writing the first split of the new data
        raise KeyboardInterrupt

    monkeypatch.setattr("vitedge.data.__main__.write_datacard", killed)
    with pytest.raises(KeyboardInterrupt):
        data_main.main(["--no-progress", "--source", "synthetic", "--per-class", "21", "--seed", "7", "--out", str(out)])
    after = load_splits(out)  # the old folder, whole
    assert all(np.array_equal(before[k].images, after[k].images) for k in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary folder left behind
    monkeypatch.undo()

    monkeypatch.setattr("vitedge.data.__main__.make_datacard",
                        lambda splits, report: {"warnings": [{"check": "x", "message": "blurred"}], "checks": {}})
    monkeypatch.setattr("vitedge.data.__main__.write_datacard",
                        lambda d, card: (Path(d, "datacard.json").write_text("{}"), Path(d, "datacard.md").write_text("")))
    code, err = _data(capsys, "--strict", "--source", "synthetic", "--per-class", "20", "--out", str(out))
    assert code == 2 and "--strict" in _one_line(err)
    assert sorted(p.name for p in out.iterdir()) == ["datacard.json", "datacard.md"]  # nothing that loads
    with pytest.raises(DatasetError, match="no manifest.json"):
        load_splits(out)
