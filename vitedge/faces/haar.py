"""OpenCV's frontal-face Haar cascade (`--detector haar`): what `fer` and `deepface` use by default.
Kept for comparison (benchmarks/faces.py) and for hosts that want no neural detector; it misses
tilted and small faces and finds "faces" in texture, which is why BlazeFace is the default."""
from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from vitedge.faces.detect import DetectorUnavailable, Face, register

CASCADE_NAME = "haarcascade_frontalface_default"  # shipped in the opencv-python-headless wheel
SCALE_FACTOR, MIN_NEIGHBORS = 1.1, 5  # detectMultiScale's settings (the web page uses the same)
MAX_SIDE = 1280  # detection runs on a copy no larger than this; boxes are scaled back


def cascade_path() -> Path:
    """The cascade file the detector loads (vitedge.web sends the same one to the page)."""
    return Path(cv2.data.haarcascades) / f"{CASCADE_NAME}.xml"


@functools.cache  # loaded once per process; a failure is not cached, so it is reported each time
def _cascade() -> cv2.CascadeClassifier:
    if not hasattr(cv2, "CascadeClassifier"):  # OpenCV 5 moved the Haar cascades out of the wheels
        raise DetectorUnavailable(f"OpenCV {cv2.__version__} has no Haar face detector: "
                                  "pip install 'opencv-python-headless>=4.8,<5'")
    path = cascade_path()
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise DetectorUnavailable(f"cannot load OpenCV's face detector from {path}")
    return cascade


def detect_gray(gray: np.ndarray, min_face: float = 40) -> list[tuple[int, int, int, int]]:
    """Frontal faces in a (H, W) uint8 image as (x, y, w, h), largest first."""
    h, w = gray.shape
    scale = min(1.0, MAX_SIDE / max(h, w))
    small = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else gray
    small = cv2.equalizeHist(small)  # the cascade is sensitive to exposure
    min_side = max(12, round(min_face * scale))
    found = _cascade().detectMultiScale(small, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS,
                                        minSize=(min_side, min_side))
    boxes = [(round(x / scale), round(y / scale), round(w / scale), round(h / scale))
             for x, y, w, h in (found if len(found) else [])]
    return sorted(boxes, key=lambda b: -b[2] * b[3])


@register("haar")
class Haar:
    name = "haar"

    def __init__(self, threads: int | None = None) -> None:  # noqa: ARG002 (OpenCV sets its own threads)
        _cascade()  # fail now, with the fix in the message, rather than on the first photo

    def detect(self, rgb: np.ndarray, min_face: float = 40) -> list[Face]:
        gray = np.asarray(Image.fromarray(rgb).convert("L"))  # PIL's luma, as the page's toGray
        return [Face(box=tuple(float(v) for v in b), score=1.0) for b in detect_gray(gray, min_face)]
