"""Video and camera through `python -m vitedge.infer`: the CSV, stable tracks, smoothing, and every
broken video, camera or output as one line with exit code 2, keeping what was processed."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vitedge import infer, video
from vitedge.data import CLASSES

torch.set_num_threads(1)
FRAMES = 40


@pytest.fixture(scope="module")
def ckpt(tiny_ckpt):
    return tiny_ckpt


def _write_clip(path: Path, frames: int = FRAMES, fourcc: str = "MJPG", faces: int = 1) -> Path:
    """640x480 at 25 frames/s: the astronaut's head moving right 6 px a frame (a second one still)."""
    from skimage.data import astronaut

    head = cv2.resize(astronaut()[0:260, 120:330], (160, 200))[:, :, ::-1]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (640, 480))
    assert writer.isOpened()
    for i in range(frames):
        frame = np.full((480, 640, 3), 90, np.uint8)
        frame[140:340, 20 + 6 * i:180 + 6 * i] = head
        if faces == 2:
            frame[20:220, 460:620] = head
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    _write_clip(d / "one.avi")
    _write_clip(d / "two.mp4", fourcc="mp4v", faces=2)
    data = (d / "one.avi").read_bytes()
    (d / "truncated.avi").write_bytes(data[: len(data) // 2])
    (d / "garbage.mp4").write_bytes(b"\0\1\2 not a video " * 500)
    (d / "empty.mp4").write_bytes(b"")
    writer = cv2.VideoWriter(str(d / "noframes.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    writer.release()
    # a codec FFmpeg does not know: the AVI's stream FourCC patched to nonsense
    (d / "codec.avi").write_bytes(data.replace(b"MJPG", b"QQQQ"))
    return d


def _run(capfd, *argv) -> tuple[int, str, str]:
    code = infer.main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_has_one_row_per_face_per_frame_and_one_track(capfd, ckpt, clips, tmp_path):
    out_csv, out_video = tmp_path / "faces.csv", tmp_path / "ann.avi"
    code, out, err = _run(capfd, "--model", ckpt, clips / "one.avi", "--csv", out_csv, "--annotate", out_video)
    assert code == infer.EXIT_OK, err
    with open(out_csv, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["frame", "time_s", "track", "x", "y", "w", "h", "emotion", "confidence",
                      *[f"p_{c}" for c in CLASSES]]
    rows = _rows(out_csv)
    assert [int(r["frame"]) for r in rows] == list(range(FRAMES))  # the face in every frame
    assert {r["track"] for r in rows} == {"1"}  # one person, one id, although the face moves 240 px
    xs = [int(r["x"]) for r in rows]
    assert xs[-1] - xs[0] > 200 and float(rows[1]["time_s"]) == pytest.approx(0.04)
    for r in rows:
        probs = [float(r[f"p_{c}"]) for c in CLASSES]
        assert sum(probs) == pytest.approx(1, abs=1e-3) and r["emotion"] == CLASSES[int(np.argmax(probs))]
    cap = cv2.VideoCapture(str(out_video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES and cap.read()[1].shape == (480, 640, 3)
    assert "1 face track" in out


def test_two_faces_two_tracks_in_json(capfd, ckpt, clips):
    code, out, _ = _run(capfd, "--model", ckpt, clips / "two.mp4", "--json", "--every", "2")
    assert code == infer.EXIT_OK
    doc = json.loads(out)
    assert [t["track"] for t in doc["tracks"]] == [1, 2] and doc["video"]["frames"] == FRAMES
    assert all(len(f["faces"]) == 2 for f in doc["frames"])
    assert all({face["track"] for face in f["faces"]} == {1, 2} for f in doc["frames"])


def test_smoothing_follows_time_and_can_be_turned_off(capfd, ckpt, clips, tmp_path):
    def confidences(*extra) -> list[list[float]]:
        out_csv = tmp_path / f"s{len(extra)}.csv"
        _run(capfd, "--model", ckpt, clips / "one.avi", "--csv", out_csv, *extra)
        return [[float(r[f"p_{c}"]) for c in CLASSES] for r in _rows(out_csv)]

    raw, smooth = confidences("--no-smooth"), confidences("--smooth", "2")
    assert raw[0] == smooth[0]  # a track's first frame is its own
    steps = lambda seq: np.abs(np.diff(np.array(seq), axis=0)).sum()  # noqa: E731
    assert steps(smooth) < steps(raw)


@pytest.mark.parametrize("name, message", [
    ("truncated.avi", "ended after"),
    ("garbage.mp4", "cannot open as a video"),
    ("empty.mp4", "cannot open as a video"),
    ("noframes.avi", "has no frames"),
    ("codec.avi", "codec"),
    ("missing.mp4", "file not found"),
])
def test_broken_videos_are_one_line_and_exit_2(capfd, ckpt, clips, tmp_path, name, message):
    out_csv = tmp_path / "f.csv"
    code, _, err = _run(capfd, "--model", ckpt, clips / name, "--csv", out_csv)
    assert code == infer.EXIT_INPUT_ERROR
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err, err
    if name == "truncated.avi":  # what played before the cut is kept
        rows = _rows(out_csv)
        assert 0 < len(rows) < FRAMES and [int(r["frame"]) for r in rows] == list(range(len(rows)))


def test_camera_that_does_not_open_and_unwritable_outputs(capfd, ckpt, clips, tmp_path):
    code, _, err = _run(capfd, "--model", ckpt, "--camera", "97", "--csv", tmp_path / "c.csv")
    assert code == infer.EXIT_INPUT_ERROR and err.strip() == "error: camera 97 did not open (no such device, " \
                                                             "no permission, or in use)"
    code, _, err = _run(capfd, "--model", ckpt, clips / "one.avi", "--csv", tmp_path / "no" / "dir" / "f.csv")
    assert code == infer.EXIT_INPUT_ERROR and "cannot write" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(capfd, "--model", ckpt, clips / "one.avi", "--annotate", tmp_path / "no" / "a.avi")
    assert code == infer.EXIT_INPUT_ERROR and "does not exist" in err
    with pytest.raises(SystemExit) as exc:
        infer.main(["--model", str(ckpt), str(clips / "one.avi"), "--annotate", str(tmp_path / "a.gif")])
    assert exc.value.code == infer.EXIT_INPUT_ERROR and "must end in" in capfd.readouterr().err


def test_video_suffixes_decide_the_path():
    assert video.is_video("a.MP4") and video.is_video("x/y.avi") and not video.is_video("photo.jpg")

