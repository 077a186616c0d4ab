"""BlazeFace (MediaPipe's short-range detector for a phone's back camera, 256x256 input), run with
ONNX Runtime over an image pyramid so it finds faces from about 20 px to the whole photo.

The model (`vitedge/assets/detector/blazeface-back-256.onnx`, Apache-2.0, LICENSE beside it: the
keijiro/BlazeFaceBarracuda conversion of PINTO0309's export of MediaPipe's model) sees a 256x256
RGB image in [-1, 1] and scores 896 SSD anchors (16x16 cells x 2 and 8x8 cells x 6); each anchor
regresses a box (centre offset, width, height in input pixels) and six keypoints.

One 256-pixel view of a 2,000-pixel group photo shrinks a 30-pixel face to 4 pixels, below what the
model sees (about 10-12 px boxes, `DET_MIN`). So the photo is searched at several scales:
level 0 is the whole photo letterboxed into one 256 tile; each finer level is `LEVEL_RATIO` times
larger, cut into overlapping 256 tiles, down to the scale where a `min_face` face is `DET_MIN`
pixels. A finer level keeps only boxes up to `TILE_MAX` pixels (bigger ones are the coarser level's)
and drops boxes cut by an inner tile edge (the overlap is `TILE_MAX`, so the whole face lies in a
neighbouring tile). Every kept detection goes through MediaPipe's weighted NMS.

Every step is written in plain arithmetic the browser repeats (vitedge/web/static/blazeface.mjs):
the same levels, tiles, resize (Pillow's bilinear), float rounding and NMS give the same boxes.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from vitedge.faces.detect import DetectorUnavailable, Face, register
from vitedge.ort_session import open_session

INPUT = 256  # the model's square input
DET_MIN = 12.0  # smallest box (input px) the model finds reliably (0.8 score on a 20-px face crop)
TILE_MAX = 96.0  # largest box a finer level keeps; also the tiles' overlap
LEVEL_RATIO = 6.0  # scale step between levels: a coarse level covers boxes >= 12 px = 72 fine px < 96
MAX_LEVEL_SIDE = 4096  # the finest level's longer side is capped (cost grows with its area)
SCORE_MIN = 0.65  # chosen on half the benchmark photos: false boxes 0.38 -> 0.15 a photo at equal recall (docs/faces.md)
NMS_IOU = 0.3  # MediaPipe's weighted NMS threshold
# The box is reported as the model gives it (square, brows to chin). On the benchmark photos the
# labelled boxes are as wide and ~15% taller (forehead included): IoU stays above 0.5 for a found face,
# and the classifier's crop margin (align.MARGIN) was measured on this box, so it is not reshaped.


def model_path() -> Path:
    return Path(str(resources.files("vitedge") / "assets" / "detector" / "blazeface-back-256.onnx"))


@functools.cache  # decode() needs them for every tile of every frame
def anchors() -> np.ndarray:
    """(896, 2) anchor centres in input pixels, in the model's output order (y, x, anchor); read-only."""
    out = []
    for cells, per_cell in ((16, 2), (8, 6)):
        stride = INPUT / cells
        for y in range(cells):
            for x in range(cells):
                out += [((x + 0.5) * stride, (y + 0.5) * stride)] * per_cell
    centres = np.array(out, dtype=np.float64)
    centres.flags.writeable = False
    return centres


def round_half_up(x: float) -> int:
    """floor(x + 0.5): one rounding rule for Python and JavaScript (Python's round() is half-even)."""
    return math.floor(x + 0.5)


@dataclass(frozen=True)
class Level:
    scale: float  # level pixels per photo pixel
    width: int
    height: int
    tiles: tuple[tuple[int, int], ...]  # top-left corners of the 256 tiles, in level pixels


def _positions(length: int) -> list[int]:
    """Tile starts along one side: one tile when it fits, else evenly spaced with >= TILE_MAX overlap."""
    if length <= INPUT:
        return [0]
    k = math.ceil((length - INPUT) / (INPUT - TILE_MAX)) + 1
    span = length - INPUT
    return [(i * span + (k - 1) // 2) // (k - 1) for i in range(k)]


def plan_levels(width: int, height: int, min_face: float) -> list[Level]:
    """The pyramid for a `width` x `height` photo: level 0 whole, finer ones tiled, until a face of
    `min_face` photo pixels is DET_MIN level pixels (or the finest level reaches MAX_LEVEL_SIDE)."""
    longest = max(width, height)
    scale = INPUT / longest
    finest = min(DET_MIN / max(min_face, 1.0), MAX_LEVEL_SIDE / longest)
    scales = [scale]
    while scale < finest:
        scale = min(scale * LEVEL_RATIO, finest)
        scales.append(scale)
    levels = []
    for s in scales:
        w, h = max(1, round_half_up(width * s)), max(1, round_half_up(height * s))
        tiles = tuple((x, y) for y in _positions(h) for x in _positions(w))
        levels.append(Level(s, w, h, tiles))
    return levels


def resize_rgb(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pillow's antialiased bilinear resize (the page ports it byte for byte: imageops.resizePIL)."""
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR, reducing_gap=None))


def tile_input(level_image: np.ndarray, x: int, y: int) -> np.ndarray:
    """(1, 256, 256, 3) float32 in [-1, 1]: the tile at (x, y), black beyond the level's edge."""
    tile = np.zeros((INPUT, INPUT, 3), dtype=np.uint8)
    crop = level_image[y:y + INPUT, x:x + INPUT]
    tile[:crop.shape[0], :crop.shape[1]] = crop
    return (tile / 127.5 - 1.0).astype(np.float32)[None]  # float64 then one rounding, as in JS


def decode(scores: np.ndarray, boxes: np.ndarray, threshold: float = SCORE_MIN) -> list[tuple[float, np.ndarray]]:
    """Raw outputs ((896,), (896, 16)) -> [(score, (8, 2) box centre, size and 6 keypoints)] in tile px."""
    out = []
    centres = anchors()
    probs = 1.0 / (1.0 + np.exp(-np.clip(scores.astype(np.float64), -100.0, 100.0)))
    for i in np.flatnonzero(probs >= threshold):
        raw = boxes[i].astype(np.float64).reshape(8, 2)
        pts = raw.copy()
        pts[0] += centres[i]  # box centre
        pts[2:] += centres[i]  # keypoints; pts[1] stays the box size
        out.append((float(probs[i]), pts))
    return out


def _keep(level_index: int, level: Level, tile: tuple[int, int], pts: np.ndarray) -> bool:
    """A finer level keeps small boxes that no inner tile edge cuts (see the module docstring)."""
    if level_index == 0:
        return True
    (cx, cy), (w, h) = pts[0], pts[1]
    if max(w, h) > TILE_MAX:
        return False
    tx, ty = tile
    x0, y0, x1, y1 = tx + cx - w / 2, ty + cy - h / 2, tx + cx + w / 2, ty + cy + h / 2
    return not ((tx > 0 and x0 < tx) or (ty > 0 and y0 < ty)
                or (tx + INPUT < level.width and x1 > tx + INPUT) or (ty + INPUT < level.height and y1 > ty + INPUT))


def weighted_nms(dets: list[tuple[float, np.ndarray]], iou_threshold: float = NMS_IOU) -> list[tuple[float, np.ndarray]]:
    """MediaPipe's weighted NMS: the best detection absorbs every one overlapping it by more than
    `iou_threshold`; the result is their score-weighted mean (corners and keypoints), at the best score.
    `dets`: (score, (8, 2): box centre, box size, 6 keypoints) in photo pixels."""
    def corners(p: np.ndarray) -> np.ndarray:
        return np.array([p[0, 0] - p[1, 0] / 2, p[0, 1] - p[1, 1] / 2, p[0, 0] + p[1, 0] / 2, p[0, 1] + p[1, 1] / 2])

    def overlap(a: np.ndarray, b: np.ndarray) -> float:
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    order = sorted(range(len(dets)), key=lambda i: (-dets[i][0], i))  # stable: ties keep their order
    remaining = [(dets[i][0], corners(dets[i][1]), dets[i][1][2:]) for i in order]
    out = []
    while remaining:
        top = remaining[0]
        # the top always joins its own group: a degenerate (zero-area) box overlaps nothing, itself
        # included, and would otherwise never leave `remaining`
        group = [top] + [d for d in remaining[1:] if overlap(top[1], d[1]) > iou_threshold]
        remaining = [d for d in remaining[1:] if overlap(top[1], d[1]) <= iou_threshold]
        total = sum(d[0] for d in group)
        box = sum(d[0] * d[1] for d in group) / total
        kps = sum(d[0] * d[2] for d in group) / total
        centre_size = np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], [box[2] - box[0], box[3] - box[1]]])
        out.append((top[0], np.concatenate([centre_size, kps])))
    return out


def to_face(score: float, pts: np.ndarray) -> Face:
    """A merged detection (photo pixels) -> Face."""
    (cx, cy), (w, h) = pts[0], pts[1]
    return Face(box=(float(cx - w / 2), float(cy - h / 2), float(w), float(h)), score=score, keypoints=pts[2:].copy())


@register("blazeface")
class BlazeFace:
    """The default detector. `threads`: ONNX Runtime intra-op threads (None: its default)."""
    name = "blazeface"

    def __init__(self, path: str | Path | None = None, threads: int | None = None,
                 score_min: float = SCORE_MIN) -> None:
        self.score_min = score_min
        path = Path(path) if path else model_path()
        if not path.is_file():
            raise DetectorUnavailable(f"BlazeFace model missing at {path}: reinstall vitedge (pip install -e .)")
        self.session = open_session(path, threads=threads)
        outputs = self.session.get_outputs()
        # two score and two box outputs (512 + 384 anchors each); ordered by anchor count, not by name
        by_shape = sorted(range(len(outputs)), key=lambda i: (outputs[i].shape[2] != 1, -outputs[i].shape[1]))
        self._names = [outputs[i].name for i in by_shape]
        self._input = self.session.get_inputs()[0].name

    def run_tile(self, tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s512, s384, b512, b384 = self.session.run(self._names, {self._input: tile})
        return np.concatenate([s512[0, :, 0], s384[0, :, 0]]), np.concatenate([b512[0], b384[0]])

    def detect_raw(self, rgb: np.ndarray, min_face: float = 20) -> list[tuple[float, np.ndarray]]:
        """Every kept detection of every tile of every level, in photo pixels, before NMS."""
        height, width = rgb.shape[:2]
        dets = []
        for li, level in enumerate(plan_levels(width, height, min_face)):
            image = resize_rgb(rgb, level.width, level.height)
            for tile in level.tiles:
                for score, pts in decode(*self.run_tile(tile_input(image, *tile)), self.score_min):
                    if _keep(li, level, tile, pts):
                        pts = pts.copy()
                        pts[0] += tile
                        pts[2:] += tile
                        dets.append((score, pts / level.scale))
        return dets

    def detect(self, rgb: np.ndarray, min_face: float = 20) -> list[Face]:
        faces = [to_face(s, p) for s, p in weighted_nms(self.detect_raw(rgb, min_face))]
        return [f for f in faces if max(f.box[2], f.box[3]) >= min_face]
