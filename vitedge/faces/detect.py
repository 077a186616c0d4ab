"""What a face detector returns, and the detectors vitedge has, by name.

    detector = load_detector("blazeface")          # the default: shipped ONNX, ONNX Runtime
    faces = detector.detect(rgb, min_face=20)      # (H, W, 3) uint8 -> [Face], best first

Both detectors take the photo in colour (the Haar cascade converts it to gray itself), return boxes
in the photo's pixels, and raise `DetectorUnavailable` when they cannot run on this host.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

# BlazeFace's six keypoints, in its order; "right"/"left" are the person's own (the right eye is on
# the left of an upright photo)
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")


class DetectorUnavailable(RuntimeError):
    """The face detector cannot run here (missing file or library): no image would fare better."""


@dataclass(frozen=True)
class Face:
    """One face in a photo: box (x, y, w, h) in the photo's pixels, the detector's score, and
    keypoints ((6, 2) x, y in the same pixels, in KEYPOINTS order) when the detector has them."""
    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray | None = None

    def int_box(self) -> tuple[int, int, int, int]:
        """The box in whole pixels (rounded corners, so w and h are the rounded extent)."""
        x, y, w, h = self.box
        x0, y0 = round(x), round(y)
        return x0, y0, round(x + w) - x0, round(y + h) - y0

    def eyes(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(right eye, left eye) as (x, y), or None for a detector without keypoints."""
        if self.keypoints is None:
            return None
        return self.keypoints[0], self.keypoints[1]


class Detector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray, min_face: int = 20) -> list[Face]:
        """Faces of at least `min_face` pixels in an (H, W, 3) uint8 RGB photo, highest score first."""
        ...


_FACTORIES: dict[str, Callable[..., Detector]] = {}


def register(name: str) -> Callable[[Callable[..., Detector]], Callable[..., Detector]]:
    """Class decorator: `load_detector(name)` builds one of these (a detector is one module)."""
    def add(factory: Callable[..., Detector]) -> Callable[..., Detector]:
        _FACTORIES[name] = factory
        return factory
    return add


def detectors() -> list[str]:
    return list(_FACTORIES)


def load_detector(name: str = "blazeface", threads: int | None = None) -> Detector:
    """A detector by name; `threads`: CPU threads it may use (None: its runtime's default)."""
    if name not in _FACTORIES:
        raise DetectorUnavailable(f"unknown face detector '{name}': choose from {', '.join(_FACTORIES)}")
    return _FACTORIES[name](threads=threads)


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0
