"""Faces followed across video frames: a stable id per person, and each person's emotion smoothed.

Matching is greedy on IoU, then on centre distance for fast movers (a face that moved more than its
overlap allows between two detections is still the same person if its centre is within one box
width and its size changed by less than half). Enough for one camera and a few people; a track that
is not seen for `max_missed` frames ends, and a new face later gets a new id.

Smoothing is an exponential moving average of the class probabilities with a time constant in
seconds (`smooth_s`), so it means the same at 10 and 60 frames/s; 0 turns it off.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vitedge.faces.detect import Face, iou

MIN_IOU = 0.3
SMOOTH_S = 0.5  # seconds: about a blink; an expression held for a second wins fully


@dataclass
class Track:
    id: int
    face: Face
    last_frame: int
    probs: np.ndarray | None = None  # the smoothed class probabilities
    last_time: float | None = None
    frames: int = 0
    history: list[int] = field(default_factory=list)  # top-1 class per frame seen (for a summary)

    def smooth(self, probs: np.ndarray, time_s: float, smooth_s: float) -> np.ndarray:
        """Fold this frame's probabilities into the track's and return the smoothed ones."""
        if self.probs is None or smooth_s <= 0 or self.last_time is None:
            self.probs = probs.copy()
        else:
            keep = math.exp(-max(time_s - self.last_time, 0.0) / smooth_s)
            self.probs = keep * self.probs + (1.0 - keep) * probs
        self.last_time = time_s
        self.history.append(int(np.argmax(self.probs)))
        return self.probs


def _close(a: Face, b: Face) -> bool:
    """Same person by position when the boxes barely overlap: centres within a width, similar size."""
    (ax, ay, aw, ah), (bx, by, bw, bh) = a.box, b.box
    dist = math.hypot(ax + aw / 2 - bx - bw / 2, ay + ah / 2 - by - bh / 2)
    return dist < max(aw, bw) and 0.5 < bw / max(aw, 1e-9) < 2.0


class Tracker:
    def __init__(self, max_missed: int = 12) -> None:
        self.max_missed = max_missed
        self.tracks: list[Track] = []
        self.ended: list[Track] = []
        self._next_id = 1

    def update(self, faces: list[Face], frame: int) -> list[Track]:
        """Match this frame's faces to live tracks; return one track per face, in `faces` order."""
        pairs = sorted(((iou(t.face.box, f.box), ti, fi) for ti, t in enumerate(self.tracks)
                        for fi, f in enumerate(faces)), reverse=True)
        owner: dict[int, Track] = {}
        used: set[int] = set()
        for overlap, ti, fi in pairs:
            if ti in used or fi in owner:
                continue
            if overlap >= MIN_IOU or _close(self.tracks[ti].face, faces[fi]):
                owner[fi] = self.tracks[ti]
                used.add(ti)
        out = []
        for fi, face in enumerate(faces):
            track = owner.get(fi)
            if track is None:
                track = Track(id=self._next_id, face=face, last_frame=frame)
                self._next_id += 1
                self.tracks.append(track)
            track.face, track.last_frame = face, frame
            track.frames += 1
            out.append(track)
        alive = [t for t in self.tracks if frame - t.last_frame <= self.max_missed]
        self.ended += [t for t in self.tracks if frame - t.last_frame > self.max_missed]
        self.tracks = alive
        return out

    def all_tracks(self) -> list[Track]:
        return sorted(self.ended + self.tracks, key=lambda t: t.id)
