"""What `vitedge.infer` and the web page share, importable without torch.

The web server (`vitedge.web`) only serves files: the page, the ONNX artefact and its meta.json.
It must not import `vitedge.infer` (which loads the runtimes, hence torch: ~700 MB resident to
serve static files), yet the page must do what `infer` does. So the settings both follow live
here: where the shipped model is, OpenCV's face detector and its settings, the crop margin, the
top-k, the largest image decoded (which the dataset reader uses too). `tests/test_web_server.py`
checks that `vitedge.infer` agrees with every one of them.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import cv2

CASCADE_NAME = "haarcascade_frontalface_default"  # OpenCV's frontal-face Haar cascade, shipped in its wheel
SCALE_FACTOR, MIN_NEIGHBORS = 1.1, 5  # detectMultiScale's settings
DETECT_MAX_SIDE = 1280  # detection runs on a copy no larger than this; boxes are scaled back
MIN_FACE = 40  # smallest face to detect, pixels
MARGIN = 0.2  # crop margin around a detected face, as a share of its size
TOP_K = 3  # emotions listed per face
MAX_IMAGE_PIXELS = 64_000_000  # ~8000x8000: larger is refused (decompression bombs), by infer and the data reader


def cascade_path() -> Path:
    """The Haar cascade file the detector loads (the web server sends the same one to the page)."""
    return Path(cv2.data.haarcascades) / f"{CASCADE_NAME}.xml"


def packaged_model() -> Path | None:
    """vitedge/assets/model/ when a model is shipped there (an artefact, a folder of them, or a .pt)."""
    try:
        root = resources.files("vitedge") / "assets" / "model"
    except (ModuleNotFoundError, TypeError):
        return None
    path = Path(str(root))
    if not path.is_dir():
        return None
    if (path / "meta.json").is_file() or any(path.glob("*/meta.json")):
        return path
    checkpoints = sorted(path.glob("*.pt"))
    return checkpoints[0] if checkpoints else None
