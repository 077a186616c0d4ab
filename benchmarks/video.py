"""Video speed of `python -m vitedge.infer clip.mp4 --csv faces.csv`, start-up included. A script, not a test.

    python benchmarks/video.py [--seconds 10] [--threads 2] [--md reports/video.md]

Makes 640x480, 25 frames/s clips (MPEG-4 Part 2, OpenCV's writer) with one moving face or two faces
(the astronaut of scikit-image's sample data, NASA, public domain), then times the whole command in a
subprocess, as a user runs it: Python start-up, imports, model and detector load, decode, detection,
tracking, classification, CSV. "real time" means at least the clip's own 25 frames/s over the wall time.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from vitedge.sysinfo import describe, machine_info  # noqa: E402

FPS, SIZE = 25, (640, 480)


def make_clip(path: Path, seconds: float, faces: int) -> Path:
    """The astronaut's head gliding across the frame (and a second head, still, top right)."""
    from skimage.data import astronaut

    head = cv2.resize(astronaut()[0:260, 120:330], (160, 200))[:, :, ::-1]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    n = round(seconds * FPS)
    for i in range(n):
        frame = np.full((SIZE[1], SIZE[0], 3), 90, np.uint8)
        x = round(20 + 260 * (1 - np.cos(2 * np.pi * i / n)) / 2)
        frame[140:340, x:x + 160] = head
        if faces == 2:
            frame[20:220, 460:620] = head
        writer.write(frame)
    writer.release()
    return path


def run_once(clip: Path, extra: list[str], threads: int, out_dir: Path) -> tuple[float, float, int]:
    """(wall seconds of the whole command, frames/s the loop itself reported, frames)."""
    cmd = [sys.executable, "-m", "vitedge.infer", str(clip), "--csv", str(out_dir / "faces.csv"),
           "--threads", str(threads), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out_dir)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    m = re.search(r"(\d+) frames in [\d.]+ s \(([\d.]+) frames/s\)", proc.stdout)
    if m is None:
        raise SystemExit(f"unexpected output: {proc.stdout!r}")
    return wall, float(m.group(2)), int(m.group(1))


VARIANTS = [  # (label, faces in the clip, extra arguments)
    ("1 face", 1, []),
    ("2 faces", 2, []),
    ("2 faces, --annotate out.mp4", 2, ["--annotate", "out.mp4"]),
    ("2 faces, --every 3", 2, ["--every", "3"]),
    ("2 faces, --detector haar", 2, ["--detector", "haar"]),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="clip length (10)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="runs per variant; the faster is reported")
    p.add_argument("--md", type=Path, help="also write the table here")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = {n: make_clip(tmp / f"clip{n}.mp4", args.seconds, n) for n in (1, 2)}
        for label, faces, extra in VARIANTS:
            best = min((run_once(clips[faces], extra, args.threads, tmp) for _ in range(args.repeats)),
                       key=lambda r: r[0])
            wall, loop_fps, frames = best
            rows.append(f"| {label} | {frames} | {wall:.2f} | {frames / wall:.1f} | {loop_fps:.1f} | "
                        f"{'yes' if frames / wall >= FPS else 'no'} |")
            print(rows[-1], flush=True)
    table = "\n".join([
        f"Video: {SIZE[0]}x{SIZE[1]} at {FPS} frames/s, {args.seconds:g} s clips, `python -m vitedge.infer clip.mp4 "
        f"--csv faces.csv --threads {args.threads}`, the shipped model, best of {args.repeats}.",
        f"Machine: {describe(machine_info())}.", "",
        "| run | frames | wall s (start-up included) | frames/s overall | frames/s in the loop | faster than real time |",
        "|---|---:|---:|---:|---:|---|", *rows])
    print("\n" + table)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
