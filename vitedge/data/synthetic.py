"""Procedural stand-in for FER-2013: small grayscale cartoon faces with 7 expressions.

Used for tests, smoke runs and CI, where the real data set is unavailable or too slow.
The expressions are built from the cues FER's classes differ in:

    class     brows                         eyes       mouth
    angry     lowered, inner ends down      narrowed   pressed, slightly down
    disgust   lowered, slightly inward      narrowed   wide grimace, teeth, one-sided sneer
    fear      raised, inner ends up         wide       stretched open, slightly down
    happy     relaxed                       a bit narrowed (cheeks)  smile, sometimes open
    sad       inner ends up                 a bit lowered           frown
    surprise  raised high, arched           wide       open "O"
    neutral   relaxed                       normal     flat line

Every image also draws its own expression intensity (weak expressions drift towards
neutral), per-feature jitter, face position/scale/rotation, skin and background
brightness, a lighting gradient, blur and noise. So the classes are learnable but not
trivially: fear/surprise and angry/disgust share most cues, and faint expressions look
neutral. Rendering is vectorised over batches of faces; shapes are anti-aliased
analytically (every edge is a one-pixel ramp of its signed distance), which is as
smooth as 2x supersampling at a quarter of the cost.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from vitedge.batching import batch_slices
from vitedge.data.splits import CLASSES, SPLITS, Split

_CHUNK = 256  # faces rendered at once; bounds memory to a few tens of MB

# Per-class expression parameters, in face units (face half-height ~0.8; v points down).
#   brow_y: brow height offset (negative = raised)    brow_tilt: inner end lower by this much
#   brow_arch: upward bow of the brow                  eye_open: eye height factor
#   mouth_w: mouth half-width                          mouth_curve: corners up by this much
#   mouth_open: half-height of the opening             lip: lip thickness
#   teeth: share of the opening showing upper teeth    sneer: one corner raised by this much
_PARAM_NAMES = (
    "brow_y", "brow_tilt", "brow_arch", "eye_open", "mouth_w", "mouth_curve", "mouth_open", "lip", "teeth", "sneer",
)
_EXPRESSIONS = {
    "neutral":  (0.00,  0.00, 0.02, 1.00, 0.20,  0.00, 0.00, 0.045, 0.0, 0.00),
    "angry":    (0.05,  0.09, 0.00, 0.55, 0.17, -0.03, 0.00, 0.060, 0.0, 0.00),
    "disgust":  (0.04,  0.04, 0.00, 0.50, 0.25, -0.03, 0.05, 0.045, 0.6, 0.05),
    "fear":     (-0.06, -0.06, 0.02, 1.50, 0.25, -0.03, 0.07, 0.040, 0.4, 0.00),
    "happy":    (-0.01, 0.00, 0.03, 0.75, 0.27,  0.13, 0.02, 0.045, 0.5, 0.00),
    "sad":      (0.01, -0.10, 0.00, 0.80, 0.20, -0.10, 0.00, 0.045, 0.0, 0.00),
    "surprise": (-0.10, -0.01, 0.05, 1.65, 0.13,  0.00, 0.13, 0.040, 0.0, 0.00),
}
# Per-image jitter (std) of each parameter, so no single measurement separates classes.
_JITTER = (0.025, 0.025, 0.015, 0.15, 0.025, 0.025, 0.015, 0.008, 0.15, 0.01)
_TABLE = np.array([_EXPRESSIONS[c] for c in CLASSES], dtype=np.float32)
_NEUTRAL = np.array(_EXPRESSIONS["neutral"], dtype=np.float32)


def make_synthetic(
    per_class: int = 200,
    seed: int = 0,
    size: int = 48,
    val_per_class: int | None = None,
    test_per_class: int | None = None,
) -> dict[str, Split]:
    """Deterministic synthetic splits of (N, size, size) uint8 faces, labels in CLASSES order.

    train has `per_class` faces per class except disgust (a third as many, like FER's
    imbalance); val and test are balanced with `per_class // 4` each unless given.
    Each split draws from its own child seed, so changing one split's size leaves the
    others unchanged.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    per_split = {
        "train": {c: max(per_class // 3, 1) if c == "disgust" else per_class for c in CLASSES},
        "val": dict.fromkeys(CLASSES, per_class // 4 if val_per_class is None else val_per_class),
        "test": dict.fromkeys(CLASSES, per_class // 4 if test_per_class is None else test_per_class),
    }
    children = np.random.SeedSequence(seed).spawn(len(SPLITS))
    out = {}
    for name, child in zip(SPLITS, children):
        rng = np.random.default_rng(child)
        labels = np.repeat(np.arange(len(CLASSES)), [per_split[name][c] for c in CLASSES])
        labels = rng.permutation(labels)  # shuffled, so unshuffled loaders still see mixed batches
        images = _render(labels, size, rng)
        out[name] = Split(images, labels, [f"synthetic:{name}/{i:05d}" for i in range(len(labels))])
    return out


def _render(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    n = len(labels)
    # All random draws happen up front, in a fixed order, so results do not depend on _CHUNK.
    intensity = rng.uniform(0.5, 1.2, n).astype(np.float32)
    expr = _NEUTRAL + intensity[:, None] * (_TABLE[labels] - _NEUTRAL)
    expr += rng.normal(0.0, 1.0, expr.shape).astype(np.float32) * np.array(_JITTER, np.float32)
    expr[:, _PARAM_NAMES.index("sneer")] *= rng.choice(np.array([-1.0, 1.0], np.float32), n)
    scene = {
        "cx": rng.normal(0.0, 0.045, n),
        "cy": rng.normal(0.02, 0.045, n),
        "scale": rng.uniform(0.88, 1.12, n),
        "angle": np.deg2rad(rng.normal(0.0, 6.0, n)),
        "face_w": rng.uniform(0.56, 0.68, n),
        "skin": rng.uniform(95, 215, n),
        "bg": rng.uniform(20, 235, n),
        "hair": rng.uniform(0.15, 0.8, n),  # hair brightness as a fraction of skin
        "hairline": rng.uniform(-0.62, -0.42, n),
        "light": rng.uniform(0.0, 0.25, n),
        "light_dir": rng.uniform(0, 2 * np.pi, n),
        "blur": rng.uniform(0.0, 1.0, n),
        "noise": rng.uniform(1.5, 7.0, n),
    }
    scene = {k: v.astype(np.float32) for k, v in scene.items()}
    noise = rng.standard_normal((n, size, size), dtype=np.float32)
    out = np.empty((n, size, size), dtype=np.uint8)
    for chunk in batch_slices(n, _CHUNK):
        out[chunk] = _render_chunk(expr[chunk], {k: v[chunk] for k, v in scene.items()}, noise[chunk], size)
    return out


Coverage = Callable[[np.ndarray], np.ndarray]  # signed distance (negative inside) -> coverage in [0, 1]


def _render_chunk(expr: np.ndarray, scene: dict[str, np.ndarray], noise: np.ndarray, size: int) -> np.ndarray:
    p = {name: expr[:, i, None, None] for i, name in enumerate(_PARAM_NAMES)}
    s = {k: v[:, None, None] for k, v in scene.items()}
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    x, y = grid[None, None, :], grid[None, :, None]

    # Face coordinates (u right, v down), unit ~ face half-height; |u| mirrors the two halves.
    cos, sin = np.cos(s["angle"]), np.sin(s["angle"])
    dx, dy = x - s["cx"], y - s["cy"]
    u = (cos * dx + sin * dy) / s["scale"]
    v = (-sin * dx + cos * dy) / s["scale"]
    px = 2.0 / size / s["scale"]  # one pixel in face units: the anti-aliasing width

    def cover(dist):
        """Signed distance (negative inside) -> coverage in [0, 1], one pixel of soft edge."""
        return np.clip(0.5 - dist / px, 0.0, 1.0)

    img = np.broadcast_to(s["bg"], u.shape).astype(np.float32)
    _paint_head(img, u, v, s, cover)
    _paint_features(img, u, v, p, s["skin"], cover)

    # Lighting gradient across the whole picture.
    img *= 1.0 + s["light"] * (np.cos(s["light_dir"]) * x + np.sin(s["light_dir"]) * y)

    # Camera: blur and sensor noise.
    img += s["blur"] * (_binomial_blur(img) - img)
    img += noise * s["noise"]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _paint(img: np.ndarray, mask: np.ndarray, value: np.ndarray) -> None:
    img += mask * (value - img)


def _paint_head(img: np.ndarray, u: np.ndarray, v: np.ndarray, s: dict[str, np.ndarray], cover: Coverage) -> None:
    """Head: an ellipse with rounded shading, and hair above a jittered hairline."""
    skin = s["skin"]
    r = np.sqrt((u / s["face_w"]) ** 2 + (v / 0.8) ** 2)
    face = cover((r - 1.0) * 0.7)
    _paint(img, face, skin * (1.08 - 0.22 * r**2))
    hair = cover((r - 1.05) * 0.7) * cover(v - s["hairline"] + 0.04 * np.cos(u * 6))
    _paint(img, hair, skin * s["hair"])


def _paint_features(img: np.ndarray, u: np.ndarray, v: np.ndarray, p: dict[str, np.ndarray], skin: np.ndarray,
                    cover: Coverage) -> None:
    """Nose, eyes, brows and mouth, the last three shaped by the expression parameters `p`."""
    au = np.abs(u)
    # Nose: a soft shadow line and two nostrils, identical for all classes.
    _paint(img, cover(np.abs(u + 0.03) - 0.012) * cover(np.abs(v - 0.06) - 0.11) * 0.35, skin * 0.7)
    _paint(img, cover(np.hypot(au - 0.06, v - 0.2) - 0.025), skin * 0.45)

    # Eyes: dark outline, light sclera, dark iris clipped to the opening.
    ex, ey, ew = 0.25, -0.12, 0.12
    eh = 0.06 * np.maximum(p["eye_open"], 0.15)
    er = np.sqrt(((au - ex) / ew) ** 2 + ((v - ey) / eh) ** 2)
    outline = np.sqrt(((au - ex) / (ew + 0.025)) ** 2 + ((v - ey) / (eh + 0.025)) ** 2)
    _paint(img, cover((outline - 1.0) * eh), skin * 0.35)
    sclera = cover((er - 1.0) * eh)
    _paint(img, sclera, np.minimum(skin * 1.25, 250.0))
    _paint(img, sclera * cover(np.hypot(au - ex, v - ey) - 0.055), skin * 0.2)

    # Brows: strokes from the inner end (|u| = 0.08) to the outer end (|u| = 0.38).
    t = (au - 0.08) / 0.30
    brow_c = -0.30 + p["brow_y"] + p["brow_tilt"] * (1 - t) - p["brow_arch"] * 4 * t * (1 - t)
    inside_t = cover(np.maximum(-t, t - 1.0) * 0.30)
    _paint(img, inside_t * cover(np.abs(v - brow_c) - 0.028 * (1.2 - 0.4 * t)), skin * 0.3)

    # Mouth: lips around a curved centre line, dark opening, optional upper teeth.
    mw = np.maximum(p["mouth_w"], 0.08)
    tm = u / mw
    span = np.clip(1 - tm**2, 0.0, 1.0)
    centre = 0.42 - p["mouth_curve"] * tm**2 - p["sneer"] * tm
    opening = np.maximum(p["mouth_open"], 0.0) * np.sqrt(span)
    across = np.abs(v - centre)
    within = cover((np.abs(tm) - 1.0) * mw)
    _paint(img, within * cover(across - opening - p["lip"] / 2), skin * 0.55)
    inner = within * cover(across - opening + p["lip"] * 0.3)
    _paint(img, inner, skin * 0.18)
    teeth_edge = centre - opening + np.clip(p["teeth"], 0.0, 1.0) * opening  # band below the upper lip
    _paint(img, inner * cover(v - teeth_edge), np.minimum(skin * 1.2, 245.0))


def _binomial_blur(img: np.ndarray) -> np.ndarray:
    """3x3 [1 2 1]^2 / 16 blur over the last two axes, edges replicated."""
    pad = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="edge")
    rows = pad[:, :-2] + 2 * pad[:, 1:-1] + pad[:, 2:]
    return (rows[:, :, :-2] + 2 * rows[:, :, 1:-1] + rows[:, :, 2:]) / 16.0
