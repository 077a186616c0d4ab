"""Face crops for the classifier: the detector's box (grown by a margin, none by default), rotated so
the eyes are level when they tilt past LEVEL_ABOVE_DEG (needs the detector's keypoints).

`benchmarks/faces.py --tilt` measures what levelling does to accuracy on tilted faces.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from vitedge.faces.detect import Face

# of the face box on every side: BlazeFace's box (brows to chin) already frames a face as FER-2013 does
# (benchmarks/faces.py --tilt: margin 0 classified best, 0.05 a point and 0.2 five points worse)
MARGIN = 0.0
# faces whose eyes tilt more than this are rotated level: on FER-2013 validation faces turned by 15-45°
# levelling wins 3-22 points, on upright ones it is within noise (benchmarks/faces.py --tilt); near-upright
# faces keep the plain crop, which the web page reproduces byte for byte
LEVEL_ABOVE_DEG = 10.0


def crop_box(box: tuple[int, int, int, int], shape: tuple[int, int], margin: float = MARGIN) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of `box` grown by `margin` of its size on every side, clamped to the image."""
    x, y, w, h = box
    dx, dy = round(w * margin), round(h * margin)
    H, W = shape
    return max(0, x - dx), max(0, y - dy), min(W, x + w + dx), min(H, y + h + dy)


def crop_face(gray: np.ndarray, box: tuple[int, int, int, int], margin: float = MARGIN) -> np.ndarray:
    """The box grown by `margin`, clamped: the crop vitedge.infer and the web page give the model."""
    x0, y0, x1, y1 = crop_box(box, gray.shape[:2], margin)
    return gray[y0:y1, x0:x1]


def eye_angle(face: Face) -> float | None:
    """Degrees the eye line is turned from horizontal (positive: clockwise on screen), None without eyes."""
    eyes = face.eyes()
    if eyes is None:
        return None
    (rx, ry), (lx, ly) = eyes  # the person's right eye is on the image's left
    return math.degrees(math.atan2(ly - ry, lx - rx))


def levelled_crop(gray: np.ndarray, face: Face, margin: float = MARGIN) -> np.ndarray:
    """The margin crop of `face`, rotated about the box centre so the eyes are horizontal; pixels the
    rotation brings in from outside the photo repeat its edge (as a clamped crop would not add)."""
    angle = eye_angle(face)
    x, y, w, h = face.int_box()
    if angle is None:
        return crop_face(gray, (x, y, w, h), margin)
    dx, dy = round(w * margin), round(h * margin)
    out_w, out_h = w + 2 * dx, h + 2 * dy
    cx, cy = x + w / 2, y + h / 2
    # rotate by +angle about the centre (cv2's positive angle turns counter-clockwise on screen, undoing
    # a clockwise tilt), then shift the crop's corner to the origin
    m = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    m[:, 2] += (out_w / 2 - cx, out_h / 2 - cy)
    return cv2.warpAffine(gray, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def face_crop(gray: np.ndarray, face: Face, margin: float = MARGIN, level_above: float = LEVEL_ABOVE_DEG) -> np.ndarray:
    """The crop for one detected face, levelled when its eyes tilt more than `level_above` degrees."""
    angle = eye_angle(face)
    if angle is not None and abs(angle) > level_above:
        return levelled_crop(gray, face, margin)
    return crop_face(gray, face.int_box(), margin)
