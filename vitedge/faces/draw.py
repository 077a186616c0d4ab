"""Annotations people can read: on the original colour photo or frame, the line width and the label
size follow each face (a label sized for a 40-px face is unreadable on a 400-px one and covers a
small one), and every label stays inside the picture."""
from __future__ import annotations

import functools
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

# one colour per emotion, so a glance at a group photo tells who is happy (FER-2013's classes;
# other class names get the neutral grey)
COLOURS = {"angry": (220, 40, 40), "disgust": (120, 160, 30), "fear": (150, 60, 200), "happy": (250, 190, 0),
           "sad": (40, 110, 230), "surprise": (250, 120, 0), "neutral": (150, 150, 150)}
DEFAULT_COLOUR = (150, 150, 150)


@dataclass(frozen=True)
class Label:
    box: tuple[int, int, int, int]  # x, y, w, h in the picture's pixels
    text: str
    emotion: str


@functools.lru_cache(maxsize=64)  # loading a FreeType font per label costs more than drawing it
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's scalable built-in font (needs FreeType)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_labels(image: Image.Image, labels: list[Label]) -> Image.Image:
    """`image` (any mode; drawn on an RGB copy) with a box and a label per face."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    W, H = out.size
    for label in labels:
        x, y, w, h = label.box
        colour = COLOURS.get(label.emotion, DEFAULT_COLOUR)
        line = max(2, round(min(w, h) / 40))
        draw.rectangle((x, y, x + w, y + h), outline=colour, width=line)
        # text height ~ a fifth of the face, never below 12 px (readable) or above 1/12 of the picture
        size = max(12, min(round(h / 5), max(12, H // 12)))
        font = _font(size)
        left, top, right, bottom = draw.textbbox((0, 0), label.text, font=font)
        tw, th, pad = right - left, bottom - top, max(2, size // 6)
        lx = min(max(0, x), max(0, W - tw - 2 * pad))  # inside the picture horizontally
        ly = y - th - 2 * pad if y - th - 2 * pad >= 0 else min(y + h, H - th - 2 * pad)  # above, else below
        ly = max(0, ly)
        draw.rectangle((lx, ly, lx + tw + 2 * pad, ly + th + 2 * pad), fill=colour)
        dark = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 140  # dark text on light fills
        draw.text((lx + pad - left, ly + pad - top), label.text, font=font, fill=(0, 0, 0) if dark else (255, 255, 255))
    return out
