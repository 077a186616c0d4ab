"""The one preprocessing every model, artefact and runtime uses.

grayscale -> resize to the model's input size (bilinear, antialiased) -> scale to [0, 1]
-> normalise with (x - mean) / std.

`resize` names the resampling: "bilinear-antialias" (PIL, every vitedge model) or "cv2-linear"
(`cv2.resize`'s default INTER_LINEAR: what a peer model such as `fer`'s mini-Xception was trained
and is used with, see `vitedge.peers`).

It is recorded in every checkpoint and artefact (`Preprocess.as_dict`) and rebuilt from
there (`Preprocess.from_dict`), so training, validation, `vitedge.infer` and the exported
formats cannot drift apart. Core ML embeds it as ImageType scale/bias: see `coreml_scale_bias`.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

RESIZE_METHODS = ("bilinear-antialias", "cv2-linear")
# The largest model input accepted. Artefacts and checkpoints carry their own preprocessing, and
# every face is resized to img_size and batched: `img_size: 100000` once made `infer` grow to 23 GB
# before the kernel killed it. vitedge's models take 48 px, imported ViTs 224 px.
MAX_IMG_SIZE = 1024


@dataclass(frozen=True)
class Preprocess:
    img_size: int = 48
    mean: float = 0.5
    std: float = 0.5
    resize: str = "bilinear-antialias"

    def __post_init__(self) -> None:
        """Bounds that keep every use finite: a size that fits in memory, a std to divide by."""
        if isinstance(self.img_size, bool) or not isinstance(self.img_size, numbers.Integral) \
                or not 1 <= self.img_size <= MAX_IMG_SIZE:
            raise ValueError(f"preprocess.img_size must be an integer in 1..{MAX_IMG_SIZE}, got {self.img_size!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"preprocess.{name} must be a finite number, got {value!r}")
        if self.std <= 0:
            raise ValueError(f"preprocess.std must be > 0 (it divides every pixel), got {self.std!r}")
        if self.resize not in RESIZE_METHODS:
            raise ValueError(f"unknown preprocess.resize {self.resize!r}; choose from {', '.join(RESIZE_METHODS)}")

    def as_dict(self) -> dict[str, Any]:
        return {"grayscale": True, "scale": 1 / 255, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        """From a checkpoint's or meta.json's `preprocess`; ValueError naming the field otherwise."""
        if not isinstance(d, dict):
            raise ValueError(f"preprocess must be an object, got {type(d).__name__}")
        missing = [k for k in ("img_size", "mean", "std") if k not in d]
        if missing:
            raise ValueError(f"preprocess lacks {', '.join(missing)}")
        size = d["img_size"]
        if isinstance(size, float) and size.is_integer():
            size = int(size)  # 48.0 from a JSON writer that does not keep ints
        resize = d.get("resize", "bilinear-antialias")
        if not isinstance(resize, str):
            raise ValueError(f"preprocess.resize must be a string, got {type(resize).__name__}")
        pre = cls(img_size=size, mean=d["mean"], std=d["std"], resize=resize)
        return cls(img_size=int(pre.img_size), mean=float(pre.mean), std=float(pre.std), resize=pre.resize)

    def coreml_scale_bias(self) -> tuple[float, float]:
        """Core ML ImageType computes `scale * pixel + bias` on 0..255 pixels."""
        return 1.0 / (255.0 * self.std), -self.mean / self.std

    def resize_uint8(self, images: np.ndarray) -> np.ndarray:
        """(N, h, w) uint8 -> (N, S, S) uint8, a no-op when already at size."""
        images = np.asarray(images)
        if images.ndim != 3:
            raise ValueError(f"expected (N, H, W) grayscale images, got shape {images.shape}")
        s = self.img_size
        if images.shape[1:] == (s, s):
            return images
        if self.resize == "cv2-linear":
            return np.stack([cv2.resize(np.ascontiguousarray(im, dtype=np.uint8), (s, s),
                                        interpolation=cv2.INTER_LINEAR) for im in images])
        return np.stack([np.asarray(Image.fromarray(im).resize((s, s), Image.BILINEAR, reducing_gap=None)) for im in images])

    def from_unit(self, x: Any) -> Any:
        """Pixels in [0, 1] -> the model's input scale (numpy or torch): the normalisation itself."""
        return (x - self.mean) / self.std

    def to_unit(self, x: Any) -> Any:
        """The model's input scale -> pixels in [0, 1]: the inverse (Core ML's image input, a
        teacher with other preprocessing)."""
        return x * self.std + self.mean

    def normalise(self, images_uint8: np.ndarray) -> np.ndarray:
        """(N, H, W) uint8 at the model size -> (N, 1, H, W) float32, normalised."""
        x = images_uint8.astype(np.float32) / 255.0
        return self.from_unit(x)[:, None, :, :].astype(np.float32)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, h, w) uint8 at any size -> model-ready (N, 1, S, S) float32."""
        return self.normalise(self.resize_uint8(images))

    def from_pil(self, image: Image.Image) -> np.ndarray:
        """A PIL image of any mode -> (1, S, S) float32 (one face crop)."""
        gray = to_gray_uint8(image)
        return self(gray[None])[0]


def to_gray_uint8(image: Image.Image) -> np.ndarray:
    """Any PIL image (RGB, RGBA, P, I;16, F ...) -> (H, W) uint8 luminance.

    16-bit and float images are rescaled by their own range rather than clipped, so a
    16-bit PNG of a face does not turn into a white square.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return arr.round().astype(np.uint8)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # composite on white: transparent pixels would otherwise become black
        rgba = image.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(bg, rgba)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """Any PIL image -> (H, W, 3) uint8 RGB for the face detector; gray and 16-bit images become
    three equal channels of `to_gray_uint8`, so PIL's luma of the result is that gray image exactly
    (19595 + 38470 + 7471 = 65536), and transparent pixels are white, as there."""
    if image.mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F", "L", "1"):
        gray = to_gray_uint8(image)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"), dtype=np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
