"""`python -m vitedge.infer`: finds the astronaut's face, survives every kind of bad input with one
clear line each, and exits with the documented codes."""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitedge import artefact, infer
from vitedge.data import CLASSES
from vitedge.export import common
from vitedge.preprocess import Preprocess

torch.set_num_threads(1)
# the astronaut's face in skimage.data.astronaut() (512x512): x 170..280, y 50..175
FACE = (170, 50, 280, 175)


@pytest.fixture(scope="module")
def ckpt(tiny_ckpt):
    return tiny_ckpt


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The astronaut in several encodings, plus every kind of bad input."""
    from skimage.data import astronaut

    d = tmp_path_factory.mktemp("photos")
    rgb = astronaut()
    Image.fromarray(rgb).save(d / "astronaut.png")
    Image.fromarray(rgb).save(d / "astronaut.jpg", quality=90)
    gray16 = (np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(gray16).save(d / "gray16.png")  # mode I;16
    assert Image.open(d / "gray16.png").mode.startswith("I")
    rgba = Image.fromarray(rgb).convert("RGBA")
    rgba.putalpha(255)
    rgba.save(d / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=256).save(d / "palette.png")
    data = (d / "astronaut.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (d / "text.jpg").write_text("this is not a picture\n")
    (d / "bomb.png").write_bytes(_png_header_claiming(100_000, 100_000))
    ramp = np.tile(np.linspace(0, 255, 320).astype(np.uint8), (240, 1))
    Image.fromarray(ramp).save(d / "gradient.png")
    crop = np.asarray(Image.fromarray(rgb).convert("L"))[FACE[1]:FACE[3], FACE[0]:FACE[2]]
    Image.fromarray(crop).save(d / "crop.png")
    return d


def _png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge image (a decompression bomb as PIL sees it)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = infer.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _overlaps_face(box: dict) -> bool:
    x0, y0, x1, y1 = box["x"], box["y"], box["x"] + box["w"], box["y"] + box["h"]
    ix = max(0, min(x1, FACE[2]) - max(x0, FACE[0]))
    iy = max(0, min(y1, FACE[3]) - max(y0, FACE[1]))
    return ix * iy > 0.5 * box["w"] * box["h"]


def test_finds_the_astronauts_face(capsys, ckpt, photos, tmp_path):
    code, out, err = _run(capsys, "--model", ckpt, "--json", "--annotate", tmp_path / "ann.png",
                          photos / "astronaut.png")
    assert code == infer.EXIT_OK, err
    doc = json.loads(out)  # one JSON document
    assert doc["model"]["runtime"] == "torch" and doc["model"]["classes"] == list(CLASSES)
    (image,) = doc["images"]
    assert (image["width"], image["height"]) == (512, 512)
    (face,) = image["faces"]  # exactly one face
    assert _overlaps_face(face["box"])
    assert face["emotion"] in CLASSES and face["emotion"] == face["top"][0]["emotion"]
    assert len(face["top"]) == 3 and 0 < face["confidence"] <= 1
    assert [t["p"] for t in face["top"]] == sorted((t["p"] for t in face["top"]), reverse=True)
    assert Image.open(tmp_path / "ann.png").size == (512, 512)


def test_crops_are_what_collect_faces_gives_the_model(ckpt, photos):
    """collect_faces: the detector's box grown by the margin, then the checkpoint's Preprocess,
    exactly as a training image would be; one crop per face, owned by its image."""
    from vitedge import runtimes
    from vitedge.faces import load_detector

    rt = runtimes.load(ckpt)
    args = infer.parse_args(["--model", str(ckpt), "--margin", "0.25", str(photos / "astronaut.png"),
                             str(photos / "gradient.png")])
    faces = infer.collect_faces(args, rt.preprocess, load_detector("blazeface"), io.StringIO())
    assert faces.owners == [0] and len(faces.results[0].found) == 1 and faces.results[1].found == []
    (face,) = faces.results[0].found
    x, y, w, h = face.int_box()
    assert _overlaps_face({"x": x, "y": y, "w": w, "h": h}) and face.score > 0.9
    gray = np.asarray(Image.open(photos / "astronaut.png").convert("L"))
    dx, dy = round(w * 0.25), round(h * 0.25)
    crop = gray[max(0, y - dy):y + h + dy, max(0, x - dx):x + w + dx]
    np.testing.assert_array_equal(faces.crops[0], Preprocess().from_pil(Image.fromarray(crop)))


def test_haar_detector_is_still_there(capsys, ckpt, photos):
    code, out, err = _run(capsys, "--model", ckpt, "--detector", "haar", "--json", photos / "astronaut.png")
    assert code == infer.EXIT_OK, err
    doc = json.loads(out)
    assert doc["detector"] == "haar" and len(doc["images"][0]["faces"]) == 1
    assert _overlaps_face(doc["images"][0]["faces"][0]["box"])


def test_annotation_is_the_colour_photo_with_readable_labels(capsys, ckpt, photos, tmp_path):
    code, out, _ = _run(capsys, "--model", ckpt, "--json", "--annotate", tmp_path / "ann.jpg", photos / "astronaut.png")
    assert code == infer.EXIT_OK
    drawn = np.asarray(Image.open(tmp_path / "ann.jpg"))
    assert drawn.shape == (512, 512, 3)
    original = np.asarray(Image.open(photos / "astronaut.png"))
    # colour kept outside the box and label (a grayscale copy would have R == G == B)
    assert np.abs(drawn[400:, :100].astype(int) - original[400:, :100]).mean() < 8
    assert np.abs(drawn[400:, :100, 0].astype(int) - drawn[400:, :100, 2]).mean() > 20


def test_annotate_refuses_an_unwritable_format_before_any_work(capsys, ckpt, photos, tmp_path):
    with pytest.raises(SystemExit) as exc:
        infer.main(["--model", str(ckpt), "--annotate", str(tmp_path / "out.xyz"), str(photos / "astronaut.png")])
    assert exc.value.code == infer.EXIT_INPUT_ERROR
    assert "cannot write '.xyz' images" in capsys.readouterr().err
    code, _, err = _run(capsys, "--model", ckpt, "--annotate", tmp_path / "out.tif", photos / "astronaut.png")
    assert code == infer.EXIT_OK and Image.open(tmp_path / "out.tif").size == (512, 512)


def test_same_file_names_get_their_own_annotation_and_a_failed_write_keeps_the_faces(capsys, ckpt, photos, tmp_path):
    other = tmp_path / "b"
    other.mkdir()
    (other / "astronaut.png").write_bytes((photos / "astronaut.png").read_bytes())
    code, _, _ = _run(capsys, "--model", ckpt, "--annotate", tmp_path / "ann.png", photos / "astronaut.png",
                      other / "astronaut.png")
    assert code == infer.EXIT_OK
    assert (tmp_path / "ann-astronaut.png").is_file() and (tmp_path / "ann-astronaut-2.png").is_file()
    code, out, err = _run(capsys, "--model", ckpt, "--json", "--annotate", tmp_path / "b" / "astronaut.png" / "a.png",
                          photos / "astronaut.png")
    assert code == infer.EXIT_INPUT_ERROR and "cannot write annotation" in err and len(err.splitlines()) == 1
    (image,) = json.loads(out)["images"]
    assert len(image["faces"]) == 1 and "cannot write annotation" in image["annotate_error"]


def test_bad_arguments_are_usage_errors(capsys, ckpt, photos):
    for argv in (["--threads", "-5", str(photos / "astronaut.png")], [],
                 ["--csv", "x.csv", str(photos / "astronaut.png")], ["a.mp4", "b.mp4"]):
        with pytest.raises(SystemExit) as exc:
            infer.main(["--model", str(ckpt), *argv])
        assert exc.value.code == infer.EXIT_INPUT_ERROR, argv
    assert "Traceback" not in capsys.readouterr().err


def test_text_output_and_other_encodings(capsys, ckpt, photos):
    code, out, err = _run(capsys, "--model", ckpt, photos / "astronaut.jpg", photos / "gray16.png",
                          photos / "rgba.png", photos / "palette.png")
    assert code == infer.EXIT_OK, err
    assert out.count(": 1 face\n") == 4  # 16-bit, RGBA and palette images all work
    assert "face 1 at x=" in out and "top-3:" in out and err == ""


def test_every_bad_input_gets_one_line_and_the_rest_still_run(capsys, ckpt, photos):
    bad = ["missing.png", "truncated.jpg", "text.jpg", "bomb.png"]
    code, out, err = _run(capsys, "--model", ckpt, "--json", photos / "astronaut.png",
                          *(photos / b for b in bad), photos / "gradient.png")
    assert code == infer.EXIT_INPUT_ERROR
    doc = json.loads(out)
    by_name = {Path(i["path"]).name: i for i in doc["images"]}
    assert len(by_name["astronaut.png"]["faces"]) == 1
    assert by_name["gradient.png"]["faces"] == []
    assert by_name["missing.png"]["error"] == "file not found"
    assert "truncated or corrupt" in by_name["truncated.jpg"]["error"]
    assert "not an image" in by_name["text.jpg"]["error"]
    assert "too large" in by_name["bomb.png"]["error"]
    lines = err.strip().splitlines()
    assert len([line for line in lines if line.startswith("error: ")]) == len(bad)
    assert any("gradient.png: no face found" in line for line in lines)
    assert "Traceback" not in err


def test_pixel_limit_is_configurable(capsys, ckpt, photos):
    code, _, err = _run(capsys, "--model", ckpt, "--max-pixels", "10000", photos / "astronaut.png")
    assert code == infer.EXIT_INPUT_ERROR and "too large" in err and "--max-pixels" in err


def test_no_face_anywhere_has_its_own_exit_code(capsys, ckpt, photos):
    code, out, err = _run(capsys, "--model", ckpt, photos / "gradient.png")
    assert code == infer.EXIT_NO_FACE and "no face found" in err and out == ""
    code, _, _ = _run(capsys, "--model", ckpt, photos / "gradient.png", photos / "astronaut.png")
    assert code == infer.EXIT_OK  # a face somewhere is success


def test_no_detect_treats_the_image_as_a_face(capsys, ckpt, photos):
    code, out, _ = _run(capsys, "--model", ckpt, "--no-detect", "--json", photos / "crop.png", photos / "gradient.png")
    assert code == infer.EXIT_OK
    faces = [img["faces"] for img in json.loads(out)["images"]]
    assert [len(f) for f in faces] == [1, 1] and faces[0][0]["box"] == {"x": 0, "y": 0, "w": 110, "h": 125}


def test_model_problems(capsys, ckpt, photos, tmp_path, monkeypatch):
    monkeypatch.setattr(infer, "packaged_model", lambda: None)
    code, _, err = _run(capsys, photos / "astronaut.png")
    assert code == infer.EXIT_MODEL_ERROR and "--model" in err and "snakemake" in err
    assert len(err.strip().splitlines()) == 1
    # the wrong kind of artefact for the runtime asked for
    code, _, err = _run(capsys, "--model", ckpt, "--runtime", "onnx", photos / "astronaut.png")
    assert code == infer.EXIT_MODEL_ERROR and "checkpoint artefact" in err and "onnx runtime" in err
    # a runtime this host lacks (a TensorRT artefact without TensorRT or a GPU)
    art = tmp_path / "student" / "tensorrt-fp16"
    art.mkdir(parents=True)
    (art / "model-x.engine").write_bytes(b"\0")
    _, info = common.load_source(ckpt)
    artefact.write_meta(art, "tensorrt", "fp16", "model-x.engine", info, 0.0, engine_key={"key": "x"})
    code, _, err = _run(capsys, "--model", art, photos / "astronaut.png")
    assert code == infer.EXIT_MODEL_ERROR and "TensorRT" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_packaged_model_is_used_when_present(capsys, ckpt, photos, monkeypatch):
    monkeypatch.setattr(infer, "packaged_model", lambda: ckpt)
    code, out, _ = _run(capsys, photos / "astronaut.png")
    assert code == infer.EXIT_OK and ": 1 face" in out


def test_command_line_help_and_subprocess(ckpt, photos):
    proc = subprocess.run([sys.executable, "-m", "vitedge.infer", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "exit codes:" in proc.stdout and "no face" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "vitedge.infer", "--model", str(ckpt), str(photos / "text.jpg"),
                           str(photos / "astronaut.png")], capture_output=True, text=True)
    assert proc.returncode == infer.EXIT_INPUT_ERROR
    assert proc.stderr.strip().startswith("error: ") and "Traceback" not in proc.stderr
    assert ": 1 face" in proc.stdout


def test_the_shipped_model_runs_as_installed(photos):
    """What a fresh `pip install` gives: `python -m vitedge.infer --json photo` with no --model, in a
    subprocess, on the model in vitedge/assets/model/, whose meta.json says how it was trained and
    how accurate it measured (workflow/scripts/ship_model.py writes that)."""
    shipped = infer.packaged_model()
    if shipped is None:
        pytest.skip("no model shipped in vitedge/assets/model/ (workflow/scripts/ship_model.py puts one there)")
    metas = [json.loads(p.read_text()) for p in shipped.glob("*/meta.json")]
    assert metas and all("shipped" in m for m in metas), "shipped artefacts must carry their training record"
    for m in metas:
        acc = m["shipped"]["test_accuracy"]
        assert 0 < acc["top1"] <= 1 and acc["n"] > 0 and "vitedge.evaluate" in acc["command"]
        assert "research use" in m["shipped"]["licence"]
    # the fp32 weights come with their stage summary, so `--init` from them keeps the training chain
    summary = json.loads((shipped / "student.json").read_text())
    assert summary["stage"] == "distill" and summary["init"] and summary["teacher"]
    assert summary == metas[0]["shipped"]["training"]["distill"]
    proc = subprocess.run([sys.executable, "-m", "vitedge.infer", "--json", str(photos / "astronaut.png")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    faces = json.loads(proc.stdout)["images"][0]["faces"]
    assert len(faces) >= 1 and faces[0]["emotion"] in CLASSES and _overlaps_face(faces[0]["box"])
