"""`python -m vitedge.infer`: find the faces in photos, a video or a camera and name their emotions.

    python -m vitedge.infer photo.jpg                       # the model shipped in vitedge/assets/model/
    python -m vitedge.infer --model results/default/artefacts/student --json a.jpg b.png
    python -m vitedge.infer --runtime onnx --model .../onnx-fp32 --annotate out.png photo.jpg
    python -m vitedge.infer clip.mp4 --csv faces.csv --annotate out.mp4     # vitedge.video
    python -m vitedge.infer --camera 0 --csv faces.csv

Photos: decode (fully, so truncated files fail here and not later) -> RGB (16-bit, RGBA and palette
images work) -> face detector (BlazeFace by default, `vitedge.faces`) -> crop each face with a
margin, levelled by its eyes when tilted -> the model's own preprocessing (the same `Preprocess` as
training, read from the artefact) -> ONE batched predict over every face of every image -> per
face: box, emotion, confidence, top-3.

Every problem with one image is one line on stderr and does not stop the others; nothing
prints a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vitedge import runtimes, video
from vitedge.bench import Stopwatch
from vitedge.defaults import (EXIT_INPUT_ERROR, EXIT_MODEL_ERROR, EXIT_NO_FACE, EXIT_OK, MAX_IMAGE_PIXELS, MIN_FACE,
                              MIN_FACE_VIDEO, TOP_K, packaged_model)
from vitedge.faces import Detector, DetectorUnavailable, Face, detectors, load_detector
from vitedge.faces.align import LEVEL_ABOVE_DEG, MARGIN, face_crop
from vitedge.faces.draw import Label, draw_labels
from vitedge.io import atomic_path
from vitedge.metrics import softmax
from vitedge.preprocess import Preprocess, to_gray_uint8, to_rgb_uint8

EPILOG = """exit codes:
  0  every input was read and at least one face was found
  1  every input was read but no face was found in any of them
  2  at least one input could not be used (missing, not an image, corrupt, too large; a video that
     does not open, has no frames, uses a codec OpenCV cannot decode or ends early; a camera that
     does not open; an output that cannot be written); the others still got results and what a
     video gave before it failed is kept. Also: bad command-line arguments
  3  no model could be run: none given or shipped, wrong or broken artefact for --runtime, runtime
     not available on this host, face detector unavailable

--annotate OUT.png with several images writes OUT-<image name>.png for each (OUT-<name>-2.png for a
repeated name). A video's annotation is a video (.mp4, .avi, .mkv)."""


class InputError(Exception):
    """One image cannot be used: the message is the whole explanation."""


@dataclass
class ImageResult:
    path: str
    size: tuple[int, int] | None = None  # (width, height)
    found: list[Face] = field(default_factory=list)  # what the detector found, in the photo's pixels
    faces: list[dict[str, Any]] = field(default_factory=list)  # one per found face, once named
    error: str | None = None  # the image could not be used
    annotate_error: str | None = None  # it was used, but its annotation could not be written


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


# --------------------------------------------------------------------------- model
NO_MODEL = ("no model given and none is shipped with this vitedge install (vitedge/assets/model/ is empty): "
            "pass --model PATH (an artefact folder, model file or .pt checkpoint), or train one with "
            "`snakemake --cores 2 all` and pass --model results/default/artefacts/student")


# --------------------------------------------------------------------------- the command
@dataclass
class Faces:
    """Every face of every image, preprocessed, for ONE batched predict."""
    results: list[ImageResult]  # one per image given, in order
    crops: list[np.ndarray] = field(default_factory=list)  # (1, S, S) float32 each
    owners: list[int] = field(default_factory=list)  # crops[k] is a face of results[owners[k]]
    images: dict[int, np.ndarray] = field(default_factory=dict)  # full-size RGB, kept for --annotate only


def _complain(err, message: str) -> None:
    print(f"error: {message}", file=err)


def _load_model(model_path: Path | None, args: argparse.Namespace, err) -> runtimes.Runtime | None:
    """The runtime for `model_path` with --runtime/--device/--threads, or None after one line on `err`."""
    if model_path is None:
        _complain(err, NO_MODEL)
        return None
    try:
        return runtimes.load(model_path, runtime=args.runtime, device=args.device, threads=args.threads)
    except (runtimes.RuntimeUnavailable, runtimes.ArtefactError, ValueError, OSError) as exc:
        _complain(err, f"{model_path}: {exc}")
        return None


def _read_rgb(res: ImageResult, max_pixels: int, err) -> np.ndarray | None:
    """The image of `res` as (H, W, 3) uint8, or None with `res.error` set and one line on `err`."""
    try:
        return to_rgb_uint8(read_image(res.path, max_pixels))
    except InputError as exc:
        res.error = str(exc)
    except Exception as exc:  # anything else PIL may throw on hostile files: still one line
        res.error = f"cannot read image ({type(exc).__name__}: {exc})"
    _complain(err, f"{res.path}: {res.error}")
    return None


def find_faces(rgb: np.ndarray, detector: Detector | None, args: argparse.Namespace) -> list[Face]:
    """The faces of one picture (the whole picture with --no-detect), largest score first."""
    if detector is None:
        return [Face(box=(0.0, 0.0, float(rgb.shape[1]), float(rgb.shape[0])), score=1.0)]
    return detector.detect(rgb, args.min_face)


def crop_faces(gray: np.ndarray, found: list[Face], args: argparse.Namespace) -> list[np.ndarray]:
    """The classifier's crop of each face (the whole picture with --no-detect)."""
    if args.no_detect:
        return [gray]
    return [face_crop(gray, f, args.margin, level_above=args.level_above) for f in found]


def collect_faces(args: argparse.Namespace, pre: Preprocess, detector: Detector | None, err) -> Faces:
    """Read every image and find its faces; each face is cropped and preprocessed for the model.
    A bad image is one line on `err` and an error in its result."""
    faces = Faces(results=[ImageResult(path=name) for name in args.inputs])
    for i, res in enumerate(faces.results):
        rgb = _read_rgb(res, args.max_pixels, err)
        if rgb is None:
            continue
        res.size = (rgb.shape[1], rgb.shape[0])
        if args.annotate:  # full-size images are kept only when they will be drawn on
            faces.images[i] = rgb
        res.found = find_faces(rgb, detector, args)
        for crop in crop_faces(to_gray_uint8(Image.fromarray(rgb)), res.found, args):
            faces.crops.append(pre(crop[None])[0])  # the training preprocessing, at the model's size
            faces.owners.append(i)
    return faces


def describe(probs: np.ndarray, classes: list[str], top_k: int) -> dict[str, Any]:
    """emotion, confidence and the top-k classes of one face's probabilities."""
    order = np.argsort(-probs)[:top_k]
    return {"emotion": classes[order[0]], "confidence": round(float(probs[order[0]]), 4),
            "top": [{"emotion": classes[j], "p": round(float(probs[j]), 4)} for j in order]}


def box_json(face: Face) -> dict[str, int]:
    x, y, w, h = face.int_box()
    return {"x": x, "y": y, "w": w, "h": h}


def name_emotions(faces: Faces, logits: np.ndarray, classes: list[str], top_k: int) -> None:
    """One entry per face in its image's result: box, emotion, confidence and the top-k classes."""
    probs = softmax(logits.astype(np.float64))
    seen: dict[int, int] = {}  # faces of each image named so far
    for row, i in enumerate(faces.owners):
        res, k = faces.results[i], seen.get(i, 0)  # k: this face's index within its image
        seen[i] = k + 1
        res.faces.append({"box": box_json(res.found[k]), **describe(probs[row], classes, top_k)})


def _say_no_face(results: list[ImageResult], as_json: bool, err) -> None:
    hint = "" if as_json else " (try --min-face smaller, or --no-detect for a face crop)"
    for res in results:
        if res.error is None and not res.faces:
            print(f"{res.path}: no face found{hint}", file=err)


def annotation_format(target: str) -> str:
    """PIL's format name for an --annotate path, or ValueError (checked before any work)."""
    suffix = Path(target).suffix.lower() or ".png"
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"--annotate {target}: cannot write '{suffix}' images; use .png or .jpg")
    return fmt


def annotate_paths(target: str, images: list[str]) -> list[Path]:
    """Where each image's annotation goes: `target` for one image, else target-<name>[-n].<suffix>,
    numbered so that two inputs with the same file name never overwrite each other."""
    target_p = Path(target)
    if len(images) == 1:
        return [target_p]
    out, used = [], set()
    for image in images:
        stem, n = Path(image).stem, 1
        name = f"{target_p.stem}-{stem}{target_p.suffix or '.png'}"
        while name in used:
            n += 1
            name = f"{target_p.stem}-{stem}-{n}{target_p.suffix or '.png'}"
        used.add(name)
        out.append(target_p.with_name(name))
    return out


def labels_of(res: ImageResult) -> list[Label]:
    return [Label(box=tuple(f["box"].values()), text=f"{f['emotion']} {f['confidence']:.2f}", emotion=f["emotion"])
            for f in res.faces]


def _write_annotations(faces: Faces, target: str, err) -> None:
    """The colour photo with a box and label per face; a failure is one line, the faces still print."""
    fmt = annotation_format(target)
    for (i, res), dest in zip(enumerate(faces.results), annotate_paths(target, [r.path for r in faces.results])):
        if res.error is None:
            try:
                image = draw_labels(Image.fromarray(faces.images[i]), labels_of(res))
                with atomic_path(dest) as tmp:
                    image.save(tmp, format=fmt)
            except (OSError, ValueError) as exc:
                res.annotate_error = f"cannot write annotation {dest}: {exc}"
                _complain(err, f"{res.path}: {res.annotate_error}")


def _print_json(rt: runtimes.Runtime, detector: str, predict_ms: float | None, results: list[ImageResult], out) -> None:
    doc = {"model": {**rt.info(), "classes": rt.classes}, "detector": detector, "predict_ms": predict_ms,
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


def _load_detector(args: argparse.Namespace, err) -> Detector | None | bool:
    """The detector (None with --no-detect), or False after one line on `err`."""
    if args.no_detect:
        return None
    try:
        return load_detector(args.detector, threads=args.threads)
    except DetectorUnavailable as exc:
        _complain(err, str(exc))
        return False


def run(args: argparse.Namespace, out=None, err=None) -> int:
    """collect (read, find faces) -> predict (one batch) -> render (print, annotate); the exit code."""
    out, err = out or sys.stdout, err or sys.stderr  # looked up now: tests and callers may redirect them
    model_path = Path(args.model) if args.model else packaged_model()
    rt = _load_model(model_path, args, err)  # the model first: without one, nothing else is worth doing
    detector = _load_detector(args, err) if rt is not None else False
    if rt is None or detector is False:
        return EXIT_MODEL_ERROR
    if args.camera is not None or video.is_video(args.inputs[0]):
        return video.run(args, rt, detector, out, err)
    faces = collect_faces(args, rt.preprocess, detector, err)

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
        _print_json(rt, args.detector if detector else "none", predict_ms, results, out)
    else:
        _print_text(results, out)
    if any(r.error or r.annotate_error for r in results):
        return EXIT_INPUT_ERROR
    return EXIT_OK if any(r.faces for r in results) else EXIT_NO_FACE


def _as_json(res: ImageResult) -> dict[str, Any]:
    if res.error is not None or res.size is None:
        return {"path": res.path, "error": res.error}
    doc = {"path": res.path, "width": res.size[0], "height": res.size[1], "faces": res.faces}
    if res.annotate_error:
        doc["annotate_error"] = res.annotate_error
    return doc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vitedge.infer",
                                description="Facial emotion recognition on photos, a video or a camera.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="IMAGE|VIDEO",
                   help=f"photos (any format PIL reads), or one video ({', '.join(video.VIDEO_SUFFIXES)})")
    p.add_argument("--camera", type=int, metavar="N", help="read camera N (OpenCV's index) instead of files")
    p.add_argument("--model", help="artefact folder, model file (.onnx/.ort/.pte/.engine/.mlpackage), model folder "
                                   "of artefacts, or a vitedge .pt checkpoint (default: the shipped model)")
    p.add_argument("--runtime", default="auto", choices=["auto", *runtimes.runtimes(), "tensorrt"],
                   help="backend (default: the fastest available here for the model)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, help="CPU threads for the runtime and the detector")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--annotate", metavar="OUT", help="write the photo (OUT.png/.jpg) or video (OUT.mp4/.avi/.mkv) "
                                                     "with boxes and labels")
    p.add_argument("--detector", default="blazeface", choices=detectors(), help="face detector (blazeface)")
    p.add_argument("--no-detect", action="store_true", help="treat each image as one face crop")
    p.add_argument("--min-face", type=int, metavar="N",
                   help=f"smallest face to find, pixels (photos: blazeface 20, haar 40; videos {MIN_FACE_VIDEO})")
    p.add_argument("--margin", type=float, default=MARGIN, help=f"crop margin around a face box ({MARGIN})")
    p.add_argument("--level-above", type=float, default=LEVEL_ABOVE_DEG, metavar="DEG",
                   help=f"rotate a face whose eyes tilt more than DEG degrees level before naming its emotion "
                        f"({LEVEL_ABOVE_DEG:g}; 180 never)")
    p.add_argument("--top-k", type=int, default=TOP_K, help="emotions listed per face (3)")
    p.add_argument("--max-pixels", type=int, default=MAX_IMAGE_PIXELS, help="refuse larger images")
    video.add_arguments(p)
    args = p.parse_args(argv)
    _check_args(p, args)
    return args


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Errors a user can fix before any work starts (exit 2 with argparse's usage line)."""
    is_video = args.camera is not None or bool(args.inputs) and video.is_video(args.inputs[0])
    if args.min_face is None:
        args.min_face = max(MIN_FACE[args.detector], MIN_FACE_VIDEO) if is_video else MIN_FACE[args.detector]
    if args.min_face < 1 or args.margin < 0 or args.top_k < 1 or args.max_pixels < 1:
        p.error("--min-face, --top-k and --max-pixels must be positive, --margin not negative")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1")
    if (args.camera is None) == (not args.inputs):
        p.error("give photos, one video, or --camera N")
    if is_video and len(args.inputs) > (0 if args.camera is not None else 1) or (
            not is_video and any(video.is_video(i) for i in args.inputs)):
        p.error("one video (or --camera) per run, without photos")
    try:
        video.check_arguments(args, is_video)
        if args.annotate and not is_video:
            annotation_format(args.annotate)
    except ValueError as exc:
        p.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
