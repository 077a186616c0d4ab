"""Emotions in a video or a camera stream (`python -m vitedge.infer clip.mp4 --csv faces.csv`).

Per frame: find the faces (every `--every` frames; in between, each track keeps its last box), follow
each person with a track id (`vitedge.faces.track`), name every face's emotion in one batched predict,
smooth each track's probabilities over `--smooth` seconds, and write one CSV row per face as it goes:

    frame,time_s,track,x,y,w,h,emotion,confidence,p_angry,...,p_neutral

The CSV (and an --annotate video) is written while the video plays, so an interrupted or broken
video keeps every row it produced. Reading uses OpenCV's VideoCapture (FFmpeg inside the
opencv-python-headless wheel), writing its VideoWriter.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

# FFmpeg's and OpenCV's own messages (a broken file, a missing camera) would be extra lines on stderr:
# vitedge says what went wrong in one line itself. FFmpeg reads this when the process opens its first
# video, so it is set here, before any VideoCapture exists.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from vitedge.defaults import EXIT_INPUT_ERROR, EXIT_NO_FACE, EXIT_OK  # noqa: E402
from vitedge.faces import Detector, Face  # noqa: E402
from vitedge.faces.align import face_crop  # noqa: E402
from vitedge.faces.draw import Label, draw_labels  # noqa: E402
from vitedge.faces.track import SMOOTH_S, Track, Tracker  # noqa: E402
from vitedge.metrics import softmax  # noqa: E402

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts",
                  ".y4m")
WRITERS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}  # FourCCs the wheel writes
CAMERA_FPS = 30.0  # when a camera does not say


class VideoError(Exception):
    """The video, camera or an output cannot be used: the message is the whole explanation."""


def is_video(path: str) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("video and camera")
    g.add_argument("--csv", metavar="FACES.csv", help="one row per face per frame, written as the video plays")
    g.add_argument("--every", type=int, default=1, metavar="N",
                   help="find faces every N frames, keep each track's box in between (1)")
    g.add_argument("--smooth", type=float, default=SMOOTH_S, metavar="SECONDS",
                   help=f"smooth each person's emotion over this time constant ({SMOOTH_S:g}); 0 turns it off")
    g.add_argument("--no-smooth", dest="smooth", action="store_const", const=0.0, help="same as --smooth 0")
    g.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames (a camera runs until Ctrl-C)")


def check_arguments(args: argparse.Namespace, is_video_run: bool) -> None:
    """ValueError for video options that cannot work, before any frame is read."""
    if args.every < 1 or args.smooth < 0 or (args.max_frames is not None and args.max_frames < 1):
        raise ValueError("--every and --max-frames must be at least 1, --smooth not negative")
    if not is_video_run:
        if args.csv:
            raise ValueError("--csv is for a video or a camera; photos print their faces (--json for machines)")
        return
    if args.no_detect:
        raise ValueError("--no-detect is for face crops, not videos")
    if args.annotate and Path(args.annotate).suffix.lower() not in WRITERS:
        raise ValueError(f"--annotate {args.annotate}: a video's annotation must end in {', '.join(WRITERS)}")


@dataclass
class Source:
    capture: cv2.VideoCapture
    name: str
    fps: float
    frames: int | None  # as the container says; None for a camera
    first: np.ndarray  # the first frame (BGR), read to prove the source works


def open_source(path: str | None, camera: int | None) -> Source:
    """The video file or camera, with its first frame read, or VideoError with the reason."""
    if camera is not None:
        cap = cv2.VideoCapture(camera)
        name = f"camera {camera}"
        if not cap.isOpened():
            raise VideoError(f"{name} did not open (no such device, no permission, or in use)")
    else:
        p = Path(str(path))
        name = str(path)
        if not p.is_file():
            raise VideoError(f"{name}: {'is a directory' if p.is_dir() else 'file not found'}")
        cap = cv2.VideoCapture(str(p))
        if not cap.isOpened():
            raise VideoError(f"{name}: cannot open as a video (not a video, corrupt, or a codec OpenCV's FFmpeg "
                             "cannot decode)")
    ok, first = cap.read()
    if not ok or first is None or first.size == 0:
        empty = camera is None and int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) <= 0
        cap.release()
        raise VideoError(f"{name}: " + ("the video has no frames" if empty else
                                        "no frames could be read (truncated, or a codec OpenCV's FFmpeg cannot decode)"))
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else CAMERA_FPS
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if camera is None else 0
    return Source(cap, name, fps, count if count > 0 else None, first)


def csv_header(classes: list[str]) -> list[str]:
    return ["frame", "time_s", "track", "x", "y", "w", "h", "emotion", "confidence", *[f"p_{c}" for c in classes]]


class Outputs:
    """The CSV and the annotated video, opened before the first frame is processed (an output that
    cannot be written stops the run before any work) and flushed every frame."""

    def __init__(self, args: argparse.Namespace, classes: list[str], fps: float, size: tuple[int, int]) -> None:
        self.csv_file: TextIO | None = None
        self.writer: cv2.VideoWriter | None = None
        try:
            if args.csv:
                self.csv_file = open(args.csv, "w", newline="", encoding="utf-8")
                self.rows = csv.writer(self.csv_file)
                self.rows.writerow(csv_header(classes))
            if args.annotate:
                self.writer = self._video_writer(Path(args.annotate), fps, size)
        except OSError as exc:
            self.close()
            raise VideoError(f"cannot write {exc.filename or args.csv}: {exc.strerror or exc}") from exc

    @staticmethod
    def _video_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
        if not path.parent.is_dir():
            raise VideoError(f"cannot write {path}: folder {path.parent} does not exist")
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*WRITERS[path.suffix.lower()]), fps, size)
        if not writer.isOpened():
            raise VideoError(f"cannot write {path}: OpenCV could not open it for writing")
        return writer

    def frame(self, rows: list[list[Any]], annotated: np.ndarray | None) -> None:
        if self.csv_file is not None:
            self.rows.writerows(rows)
            self.csv_file.flush()
        if self.writer is not None and annotated is not None:
            self.writer.write(annotated)

    def close(self) -> None:
        if self.csv_file is not None:
            self.csv_file.close()
        if self.writer is not None:
            self.writer.release()


@dataclass
class Run:
    """What a video gave: per frame the faces (for --json), per track a summary."""
    frames: int = 0
    faces: int = 0
    seconds: float = 0.0
    per_frame: list[dict[str, Any]] = field(default_factory=list)
    tracks: list[Track] = field(default_factory=list)
    error: str | None = None


def _faces_this_frame(index: int, rgb: np.ndarray, detector: Detector, tracker: Tracker,
                      args: argparse.Namespace) -> list[Face]:
    if index % args.every == 0:
        return detector.detect(rgb, args.min_face)
    # between detections every live track keeps its box (a face may leave; the next detection says so)
    return [t.face for t in tracker.tracks if t.last_frame == index - 1]


def _name(rt, gray: np.ndarray, found: list[Face], args: argparse.Namespace) -> np.ndarray:
    """(faces, classes) probabilities for this frame's faces, one batched predict."""
    if not found:
        return np.zeros((0, len(rt.classes)))
    crops = np.stack([rt.preprocess(face_crop(gray, f, args.margin, args.level_above)[None])[0] for f in found])
    return softmax(rt.predict(crops.astype(np.float32)).astype(np.float64))


def _rows(index: int, time_s: float, tracks: list[Track], probs: np.ndarray, classes: list[str],
          smooth_s: float) -> list[list[Any]]:
    rows = []
    for track, p in zip(tracks, probs):
        p = track.smooth(p, time_s, smooth_s)
        k = int(np.argmax(p))
        x, y, w, h = track.face.int_box()
        rows.append([index, round(time_s, 3), track.id, x, y, w, h, classes[k], round(float(p[k]), 4),
                     *[round(float(v), 4) for v in p]])
    return rows


def _annotate(frame_bgr: np.ndarray, rows: list[list[Any]]) -> np.ndarray:
    labels = [Label(box=(r[3], r[4], r[5], r[6]), text=f"#{r[2]} {r[7]} {r[8]:.2f}", emotion=r[7]) for r in rows]
    drawn = draw_labels(Image.fromarray(frame_bgr[:, :, ::-1]), labels)
    return np.ascontiguousarray(np.asarray(drawn)[:, :, ::-1])


def process(source: Source, rt, detector: Detector, args: argparse.Namespace, outputs: Outputs) -> Run:
    """Every frame of `source` through detect -> track -> name -> smooth -> write."""
    run, tracker, frame = Run(), Tracker(max_missed=max(12, 2 * args.every)), source.first
    start = time.perf_counter()
    limit = args.max_frames or source.frames
    bar = tqdm(total=limit, unit="frame", desc=Path(source.name).name, disable=None, leave=False)
    try:
        while frame is not None and (args.max_frames is None or run.frames < args.max_frames):
            index, time_s = run.frames, run.frames / source.fps
            rgb = np.ascontiguousarray(frame[:, :, ::-1])
            found = _faces_this_frame(index, rgb, detector, tracker, args)
            tracks = tracker.update(found, index)
            probs = _name(rt, cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), found, args)
            rows = _rows(index, time_s, tracks, probs, rt.classes, args.smooth)
            outputs.frame(rows, _annotate(frame, rows) if outputs.writer is not None else None)
            if args.json:
                run.per_frame.append({"frame": index, "time_s": round(time_s, 3), "faces": [
                    {"track": r[2], "box": dict(zip("xywh", r[3:7])), "emotion": r[7], "confidence": r[8]}
                    for r in rows]})
            run.frames, run.faces = run.frames + 1, run.faces + len(rows)
            bar.update()
            ok, frame = source.capture.read()
            frame = frame if ok else None
    except KeyboardInterrupt:  # a camera's normal stop; the rows so far are kept either way
        run.error = "interrupted"
    finally:
        bar.close()
        run.seconds = time.perf_counter() - start
        run.tracks = tracker.all_tracks()
    return run


def _truncated(source: Source, run: Run, args: argparse.Namespace) -> str | None:
    """A file that ended well before the frame count its container gives was cut short."""
    if source.frames is None or args.max_frames is not None:
        return None
    if run.frames < source.frames * 0.98 - 1:  # containers' counts are estimates: allow 2 %
        return (f"{source.name}: the video ended after {run.frames} of {source.frames} frames (truncated or "
                "corrupt); the rows up to there are kept")
    return None


def summary(tracker_tracks: list[Track], classes: list[str]) -> list[dict[str, Any]]:
    out = []
    for t in tracker_tracks:
        counts = np.bincount(t.history, minlength=len(classes)) if t.history else np.zeros(len(classes), int)
        k = int(np.argmax(counts))
        out.append({"track": t.id, "frames": t.frames, "emotion": classes[k],
                    "share": round(float(counts[k] / max(1, counts.sum())), 3)})
    return out


def _report(source: Source, run: Run, tracks: list[dict[str, Any]], rt, args: argparse.Namespace, out) -> None:
    fps = run.frames / run.seconds if run.seconds > 0 else 0.0
    if args.json:
        doc = {"model": {**rt.info(), "classes": rt.classes}, "detector": args.detector,
               "video": {"source": source.name, "fps": source.fps, "frames": run.frames,
                         "processed_fps": round(fps, 1), "error": run.error},
               "tracks": tracks, "frames": run.per_frame}
        json.dump(doc, out, indent=2)
        out.write("\n")
        return
    print(f"{source.name}: {run.frames} frames in {run.seconds:.1f} s ({fps:.1f} frames/s), "
          f"{len(tracks)} face track{'s' * (len(tracks) != 1)}", file=out)
    for t in tracks:
        print(f"  track {t['track']}: {t['frames']} frames, mostly {t['emotion']} ({t['share']:.0%})", file=out)


def run(args: argparse.Namespace, rt, detector: Detector, out, err) -> int:
    """The video or camera run behind `python -m vitedge.infer`; its exit code."""
    try:
        source = open_source(args.inputs[0] if args.inputs else None, args.camera)
    except VideoError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_INPUT_ERROR
    try:
        outputs = Outputs(args, rt.classes, source.fps, (source.first.shape[1], source.first.shape[0]))
    except VideoError as exc:
        source.capture.release()
        print(f"error: {exc}", file=err)
        return EXIT_INPUT_ERROR
    try:
        result = process(source, rt, detector, args, outputs)
    finally:
        outputs.close()
        source.capture.release()
    result.error = result.error or _truncated(source, result, args)
    if result.error and result.error != "interrupted":
        print(f"error: {result.error}", file=err)
    _report(source, result, summary(result.tracks, rt.classes), rt, args, out)
    if result.error and result.error != "interrupted":
        return EXIT_INPUT_ERROR
    return EXIT_OK if result.faces else EXIT_NO_FACE
