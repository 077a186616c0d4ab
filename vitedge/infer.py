"""`python -m vitedge.infer`: find the faces in photos and name their emotions.

    python -m vitedge.infer photo.jpg                       # the model shipped in vitedge/assets/model/
    python -m vitedge.infer --model results/default/artefacts/student --json a.jpg b.png
    python -m vitedge.infer --runtime onnx --model .../onnx-fp32 --annotate out.png photo.jpg

Pipeline: decode (fully, so truncated files fail here and not later) -> grayscale
(`preprocess.to_gray_uint8`: 16-bit, RGBA and palette images work) -> OpenCV Haar cascade
face detection -> crop each face with a margin -> the model's own preprocessing (the same
`Preprocess` as training, read from the artefact) -> ONE batched predict over every face of
every image -> per face: box, emotion, confidence, top-3.

Every problem with one image is one line on stderr and does not stop the others; nothing
prints a traceback.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from vitedge import runtimes
from vitedge.bench import Stopwatch
from vitedge.io import atomic_path
from vitedge.metrics import softmax
from vitedge.preprocess import Preprocess, to_gray_uint8

EXIT_OK, EXIT_NO_FACE, EXIT_INPUT_ERROR, EXIT_MODEL_ERROR = 0, 1, 2, 3
EPILOG = """exit codes:
  0  every image was read and at least one face was found
  1  every image was read but no face was found in any of them
  2  at least one image could not be used (missing, not an image, corrupt, too large); the others
     still got results. Also: bad command-line arguments
  3  no model could be run: none given or shipped, wrong artefact for --runtime, runtime not
     available on this host

--annotate OUT.png with several images writes OUT-<image name>.png for each."""
MAX_IMAGE_PIXELS = 64_000_000  # ~8000x8000: larger is refused (decompression bombs, absurd inputs)
DETECT_MAX_SIDE = 1280  # detection runs on a copy no larger than this; boxes are scaled back
TOP_K = 3
CASCADE_NAME = "haarcascade_frontalface_default"  # OpenCV's frontal-face Haar cascade, shipped in its wheel
SCALE_FACTOR, MIN_NEIGHBORS = 1.1, 5  # detectMultiScale's settings (the web page uses the same)


class InputError(Exception):
    """One image cannot be used: the message is the whole explanation."""


@dataclass
class ImageResult:
    path: str
    size: tuple[int, int] | None = None  # (width, height)
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # (x, y, w, h)
    faces: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


# --------------------------------------------------------------------------- reading images
def read_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open and fully decode an image, upright (EXIF orientation applied), or raise InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found")
    if path.is_dir():
        raise InputError("is a directory, not an image")
    # PIL's limit is process-wide: set it for this decode only, so no other caller inherits it
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()  # force the decode: truncated / corrupt data fails here
                image = ImageOps.exif_transpose(im)
                image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"image too large to process safely ({exc}); the limit is {max_pixels:,} pixels "
                         "(--max-pixels)") from exc
    except UnidentifiedImageError as exc:
        raise InputError("not an image, or a format PIL cannot read") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # PIL's errors for broken data
        raise InputError(f"truncated or corrupt image ({exc})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    if image.width < 1 or image.height < 1:
        raise InputError("empty image")
    return image


# --------------------------------------------------------------------------- faces
def cascade_path() -> Path:
    """The Haar cascade file the detector loads (vitedge.web sends the same one to the page)."""
    return Path(cv2.data.haarcascades) / f"{CASCADE_NAME}.xml"


@functools.cache  # loaded once per process; a failure is not cached, so it is reported each time
def _cascade() -> cv2.CascadeClassifier:
    if not hasattr(cv2, "CascadeClassifier"):  # OpenCV 5 moved the Haar cascades out of the wheels
        raise RuntimeError(f"OpenCV {cv2.__version__} has no Haar face detector: "
                           "pip install 'opencv-python-headless>=4.8,<5'")
    path = cascade_path()
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"cannot load OpenCV's face detector from {path}")
    return cascade


def detect_faces(gray: np.ndarray, min_face: int = 40) -> list[tuple[int, int, int, int]]:
    """Frontal faces in a (H, W) uint8 image as (x, y, w, h), largest first."""
    h, w = gray.shape
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else gray
    small = cv2.equalizeHist(small)  # the cascade is sensitive to exposure
    min_side = max(12, round(min_face * scale))
    found = _cascade().detectMultiScale(small, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS,
                                        minSize=(min_side, min_side))
    boxes = [(round(x / scale), round(y / scale), round(w / scale), round(h / scale))
             for x, y, w, h in (found if len(found) else [])]
    return sorted(boxes, key=lambda b: -b[2] * b[3])


def crop_face(gray: np.ndarray, box: tuple[int, int, int, int], margin: float = 0.2) -> np.ndarray:
    """The box grown by `margin` of its size on every side (FER-2013 faces include hair and chin), clamped."""
    x, y, w, h = box
    dx, dy = round(w * margin), round(h * margin)
    H, W = gray.shape
    return gray[max(0, y - dy):min(H, y + h + dy), max(0, x - dx):min(W, x + w + dx)]


# --------------------------------------------------------------------------- model
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


NO_MODEL = ("no model given and none is shipped with this vitedge install (vitedge/assets/model/ is empty): "
            "pass --model PATH (an artefact folder, model file or .pt checkpoint), or train one with "
            "`snakemake --cores 2 all` and pass --model results/default/artefacts/student")


# --------------------------------------------------------------------------- the command
class DetectorUnavailable(RuntimeError):
    """OpenCV's face detector cannot run here: no image would fare better, so the run stops."""


@dataclass
class Faces:
    """Every face of every image, preprocessed, for ONE batched predict."""
    results: list[ImageResult]  # one per image given, in order
    crops: list[np.ndarray] = field(default_factory=list)  # (1, S, S) float32 each
    owners: list[int] = field(default_factory=list)  # crops[k] is a face of results[owners[k]]
    grays: dict[int, np.ndarray] = field(default_factory=dict)  # full-size images, kept for --annotate only


def _complain(err, message: str) -> None:
    print(f"error: {message}", file=err)


def _load_model(model_path: Path | None, args: argparse.Namespace, err) -> runtimes.Runtime | None:
    """The runtime for `model_path` with --runtime/--device/--threads, or None after one line on `err`."""
    if model_path is None:
        _complain(err, NO_MODEL)
        return None
    try:
        return runtimes.load(model_path, runtime=args.runtime, device=args.device, threads=args.threads)
    except (runtimes.RuntimeUnavailable, runtimes.ArtefactError, ValueError) as exc:
        _complain(err, f"{model_path}: {exc}")
        return None


def _read_gray(res: ImageResult, max_pixels: int, err) -> np.ndarray | None:
    """The image of `res` as (H, W) uint8, or None with `res.error` set and one line on `err`."""
    try:
        return to_gray_uint8(read_image(res.path, max_pixels))
    except InputError as exc:
        res.error = str(exc)
    except Exception as exc:  # anything else PIL may throw on hostile files: still one line
        res.error = f"cannot read image ({type(exc).__name__}: {exc})"
    _complain(err, f"{res.path}: {res.error}")
    return None


def collect_faces(args: argparse.Namespace, pre: Preprocess, err) -> Faces:
    """Read every image and find its faces; each face is cropped and preprocessed for the model.
    A bad image is one line on `err` and an error in its result; DetectorUnavailable stops it all."""
    faces = Faces(results=[ImageResult(path=name) for name in args.images])
    for i, res in enumerate(faces.results):
        gray = _read_gray(res, args.max_pixels, err)
        if gray is None:
            continue
        res.size = (gray.shape[1], gray.shape[0])
        if args.annotate:  # full-size images are kept only when they will be drawn on
            faces.grays[i] = gray
        try:
            res.boxes = [(0, 0, *res.size)] if args.no_detect else detect_faces(gray, args.min_face)
        except RuntimeError as exc:
            raise DetectorUnavailable(str(exc)) from exc
        for box in res.boxes:
            face = gray if args.no_detect else crop_face(gray, box, args.margin)
            faces.crops.append(pre(face[None])[0])  # the training preprocessing, at the model's size
            faces.owners.append(i)
    return faces


def name_emotions(faces: Faces, logits: np.ndarray, classes: list[str], top_k: int) -> None:
    """One entry per face in its image's result: box, emotion, confidence and the top-k classes."""
    probs = softmax(logits.astype(np.float64))
    seen: dict[int, int] = {}  # faces of each image named so far
    for row, i in enumerate(faces.owners):
        res, k = faces.results[i], seen.get(i, 0)  # k: this face's index within its image
        seen[i] = k + 1
        order = np.argsort(-probs[row])[:top_k]
        x, y, w, h = res.boxes[k]
        res.faces.append({
            "box": {"x": x, "y": y, "w": w, "h": h},
            "emotion": classes[order[0]],
            "confidence": round(float(probs[row, order[0]]), 4),
            "top": [{"emotion": classes[j], "p": round(float(probs[row, j]), 4)} for j in order],
        })


def _say_no_face(results: list[ImageResult], as_json: bool, err) -> None:
    hint = "" if as_json else " (try --min-face smaller, or --no-detect for a face crop)"
    for res in results:
        if res.error is None and not res.faces:
            print(f"{res.path}: no face found{hint}", file=err)


def _write_annotations(faces: Faces, target: str, err) -> None:
    for i, res in enumerate(faces.results):
        if res.error is None:
            try:
                _annotate(res, faces.grays[i], annotate_path(target, res.path, len(faces.results)))
            except OSError as exc:
                res.error = f"cannot write annotation: {exc}"
                _complain(err, f"{res.path}: {res.error}")


def _print_json(rt: runtimes.Runtime, predict_ms: float | None, results: list[ImageResult], out) -> None:
    doc = {"model": {**rt.info(), "classes": rt.classes}, "predict_ms": predict_ms,
           "images": [_as_json(r) for r in results]}
    json.dump(doc, out, indent=2)
    out.write("\n")


def _print_text(results: list[ImageResult], out) -> None:
    for res in results:
        if res.error is None and res.faces:
            print(f"{res.path}: {len(res.faces)} face{'s' * (len(res.faces) != 1)}", file=out)
            for n, f in enumerate(res.faces, 1):
                b = f["box"]
                top = ", ".join(f"{t['emotion']} {t['p']:.2f}" for t in f["top"])
                print(f"  face {n} at x={b['x']} y={b['y']} w={b['w']} h={b['h']}: {f['emotion']} "
                      f"{f['confidence']:.2f} (top-{len(f['top'])}: {top})", file=out)


def run(args: argparse.Namespace, out=None, err=None) -> int:
    """collect (read, find faces) -> predict (one batch) -> render (print, annotate); the exit code."""
    out, err = out or sys.stdout, err or sys.stderr  # looked up now: tests and callers may redirect them
    model_path = Path(args.model) if args.model else packaged_model()
    rt = _load_model(model_path, args, err)  # the model first: without one, nothing else is worth doing
    if rt is None:
        return EXIT_MODEL_ERROR
    try:
        faces = collect_faces(args, rt.preprocess, err)
    except DetectorUnavailable as exc:
        _complain(err, str(exc))
        return EXIT_MODEL_ERROR

    predict_ms = None
    if faces.crops:
        try:
            with Stopwatch() as watch:
                logits = rt.predict(np.stack(faces.crops).astype(np.float32))
        except Exception as exc:  # a runtime failing mid-way is a model problem, not an input one
            _complain(err, f"{model_path}: prediction failed ({type(exc).__name__}: {exc})")
            return EXIT_MODEL_ERROR
        predict_ms = watch.seconds * 1e3
        name_emotions(faces, logits, rt.classes, args.top_k)

    results = faces.results
    _say_no_face(results, args.json, err)
    if args.annotate:
        _write_annotations(faces, args.annotate, err)
    if args.json:
        _print_json(rt, predict_ms, results, out)
    else:
        _print_text(results, out)
    if any(r.error for r in results):
        return EXIT_INPUT_ERROR
    return EXIT_OK if any(r.faces for r in results) else EXIT_NO_FACE


def _as_json(res: ImageResult) -> dict[str, Any]:
    if res.error is not None or res.size is None:
        return {"path": res.path, "error": res.error}
    return {"path": res.path, "width": res.size[0], "height": res.size[1], "faces": res.faces}


def annotate_path(target: str, image_path: str, n_images: int) -> Path:
    target_p = Path(target)
    if n_images == 1:
        return target_p
    return target_p.with_name(f"{target_p.stem}-{Path(image_path).stem}{target_p.suffix or '.png'}")


def _annotate(res: ImageResult, gray: np.ndarray, dest: Path) -> None:
    """The photo (in gray, as the model saw it) with a box and label per face, written atomically."""
    image = Image.fromarray(gray).convert("RGB")
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 300))
    for face in res.faces:
        b = face["box"]
        x0, y0, x1, y1 = b["x"], b["y"], b["x"] + b["w"], b["y"] + b["h"]
        draw.rectangle((x0, y0, x1, y1), outline=(255, 64, 64), width=width)
        label = f"{face['emotion']} {face['confidence']:.2f}"
        tx, ty = x0, max(0, y0 - 14 - width)
        box = draw.textbbox((tx, ty), label)
        draw.rectangle(box, fill=(255, 64, 64))
        draw.text((tx, ty), label, fill=(255, 255, 255))
    fmt = (dest.suffix.lstrip(".") or "png").upper().replace("JPG", "JPEG")
    with atomic_path(dest) as tmp:
        image.save(tmp, format=fmt)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vitedge.infer", description="Facial emotion recognition on photos.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photos (any format PIL reads)")
    p.add_argument("--model", help="artefact folder, model file (.onnx/.ort/.pte/.engine/.mlpackage), model folder "
                                   "of artefacts, or a vitedge .pt checkpoint (default: the shipped model)")
    p.add_argument("--runtime", default="auto", choices=["auto", *runtimes.runtimes(), "tensorrt"],
                   help="backend (default: the fastest available here for the model)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, help="CPU threads for the runtime")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--annotate", metavar="OUT.png", help="write the photo with boxes and labels")
    p.add_argument("--no-detect", action="store_true", help="treat each image as one face crop")
    p.add_argument("--min-face", type=int, default=40, metavar="N", help="smallest face to detect, pixels (40)")
    p.add_argument("--margin", type=float, default=0.2, help="crop margin around a detected face (0.2)")
    p.add_argument("--top-k", type=int, default=TOP_K, help="emotions listed per face (3)")
    p.add_argument("--max-pixels", type=int, default=MAX_IMAGE_PIXELS, help="refuse larger images")
    args = p.parse_args(argv)
    if args.min_face < 1 or args.margin < 0 or args.top_k < 1 or args.max_pixels < 1:
        p.error("--min-face, --top-k and --max-pixels must be positive, --margin not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
