"""What `vitedge.infer` and the web page share, importable without torch.

The web server (`vitedge.web`) only serves files: the page, the detector, the ONNX artefact and its
meta.json. It must not import `vitedge.infer` (which loads the runtimes, hence torch: ~700 MB
resident to serve static files), yet the page must do what `infer` does. So the settings of
`infer` itself live here (the detectors' own are in `vitedge.faces`), and `infer` reads them from
here too: where the shipped model is, the smallest face asked for, the top-k, the largest image
decoded (which the dataset reader uses too).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

# infer's exit codes, photos and videos alike (its --help and the README say what each means)
EXIT_OK, EXIT_NO_FACE, EXIT_INPUT_ERROR, EXIT_MODEL_ERROR = 0, 1, 2, 3
MIN_FACE = {"blazeface": 20, "haar": 40}  # smallest face each detector is asked for in a photo, pixels
# a 640x480 frame searched down to 40-px faces is one 256 view for BlazeFace (20 px needs five;
# benchmarks/video.py)
MIN_FACE_VIDEO = 40
TOP_K = 3  # emotions listed per face
MAX_IMAGE_PIXELS = 64_000_000  # ~8000x8000: larger is refused (decompression bombs), by infer and the data reader


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
