"""Face detection, measured. A script, not a test.

    python benchmarks/faces.py --set DIR [--md docs/faces.md]         # detectors on a labelled photo set
    python benchmarks/faces.py --tilt --data results/fer2013/data      # crops and eye levelling on FER faces

`--set DIR`: a folder with `labels.json` ({"images": [{"file", "faces": [[x, y, w, h]...], "ignore": [...]}]},
built by benchmarks/faces_set.py from public labelled sets; no photo is committed). For each detector:
recall at IoU 0.5, false boxes per photo (a detection matching no labelled face and not lying on an
"ignore" region), ms per photo, and, split as users meet them, how often a single-person portrait
gives exactly its one face, and recall / false boxes on group photos (3 or more faces).

`--tilt`: FER-2013 validation faces (PublicTest, never PrivateTest), upscaled 4x into a 320x320
frame and turned by +-angle; BlazeFace finds each face, the crop goes to the shipped model; accuracy
with plain crops vs crops levelled by the eyes, against the 48x48 faces classified directly.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from vitedge import infer, runtimes  # noqa: E402
from vitedge.faces import Face, iou, load_detector  # noqa: E402
from vitedge.faces.align import LEVEL_ABOVE_DEG, MARGIN, face_crop  # noqa: E402
from vitedge.faces.blazeface import DET_MIN, INPUT  # noqa: E402
from vitedge.sysinfo import describe, machine_info  # noqa: E402

IOU_MATCH = 0.5


# --------------------------------------------------------------------------- detection on a labelled set
@dataclass
class Tally:
    faces: int = 0
    matched: int = 0
    false: int = 0
    photos: int = 0
    exactly_one: int = 0  # portraits only: one box, and it is the face
    ms: list[float] = field(default_factory=list)


def match(found: list[Face], truth: list[list[float]], ignore: list[list[float]]) -> tuple[int, int]:
    """(labelled faces found at IoU >= 0.5, false boxes): greedy one-to-one by IoU; a box on an
    ignore region (a labelled face too small or marked invalid) is neither."""
    pairs = sorted(((iou(f.box, tuple(t)), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)),
                   reverse=True)
    used_f, used_t = set(), set()
    for overlap, i, j in pairs:
        if overlap < IOU_MATCH:
            break
        if i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
    false = 0
    for i, f in enumerate(found):
        if i in used_f:
            continue
        on_ignored = any(iou(f.box, tuple(g)) >= 0.3 for g in ignore + truth)  # a loose box on a real face
        false += 0 if on_ignored else 1
    return len(used_t), false


def evaluate(detector, min_face: float, images: list[dict], root: Path) -> dict[str, Tally]:
    tallies = {"all": Tally(), "portraits": Tally(), "groups": Tally()}
    for item in images:
        rgb = np.asarray(Image.open(root / item["file"]).convert("RGB"))
        start = time.perf_counter()
        found = detector.detect(rgb, min_face)
        ms = (time.perf_counter() - start) * 1e3
        matched, false = match(found, item["faces"], item.get("ignore", []))
        kinds = ["all"] + (["portraits"] if len(item["faces"]) == 1 else []) + (["groups"] if len(item["faces"]) >= 3 else [])
        for kind in kinds:
            t = tallies[kind]
            t.faces, t.matched, t.false, t.photos = t.faces + len(item["faces"]), t.matched + matched, t.false + false, t.photos + 1
            t.exactly_one += int(len(found) == 1 and matched == 1)
            t.ms.append(ms)
    return tallies


class OneView:
    """BlazeFace without the pyramid: the whole photo in one 256 view (what a plain port would do)."""
    name = "blazeface, one view"

    def __init__(self, threads: int) -> None:
        self.inner = load_detector("blazeface", threads=threads)

    def detect(self, rgb: np.ndarray, min_face: float) -> list[Face]:
        one_level = DET_MIN * max(rgb.shape[:2]) / INPUT  # the smallest face that keeps plan_levels at one
        return self.inner.detect(rgb, max(min_face, one_level))


DETECTORS = [  # (label, factory(threads), min_face)
    ("Haar cascade (OpenCV, `--detector haar`)", lambda t: load_detector("haar", threads=t), infer.MIN_FACE["haar"]),
    ("BlazeFace, one 256 view of the photo", OneView, infer.MIN_FACE["blazeface"]),
    ("BlazeFace, pyramid to 20-px faces (default)", lambda t: load_detector("blazeface", threads=t),
     infer.MIN_FACE["blazeface"]),
]


def threshold_sweep(root: Path, threads: int, half: int) -> str:
    """BlazeFace's score threshold against recall and false boxes, on every other photo of the set
    (`half` 0 or 1): the threshold is chosen on one half, the table above is reported on all."""
    from vitedge.faces.blazeface import BlazeFace

    images = json.loads((root / "labels.json").read_text())["images"][half::2]
    rows = []
    for threshold in (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8):
        t = evaluate(BlazeFace(threads=threads, score_min=threshold), infer.MIN_FACE["blazeface"], images, root)
        a, p = t["all"], t["portraits"]
        rows.append(f"| {threshold:.2f} | {a.matched / a.faces:.1%} | {a.false / a.photos:.2f} | "
                    f"{p.exactly_one / max(p.photos, 1):.1%} |")
        print(rows[-1], flush=True)
    return "\n".join([f"BlazeFace score threshold on {len(images)} photos (half {half} of the set).", "",
                      "| threshold | recall | false boxes / photo | portraits: exactly their face |",
                      "|---:|---:|---:|---:|", *rows])


def detection_table(root: Path, threads: int) -> str:
    labels = json.loads((root / "labels.json").read_text())
    images = labels["images"]
    rows = []
    for label, factory, min_face in DETECTORS:
        t = evaluate(factory(threads), min_face, images, root)
        a, p, g = t["all"], t["portraits"], t["groups"]
        rows.append(f"| {label} | {a.matched / a.faces:.1%} | {a.false / a.photos:.2f} | "
                    f"{p.exactly_one / max(p.photos, 1):.1%} ({p.photos}) | {g.matched / max(g.faces, 1):.1%} | "
                    f"{g.false / max(g.photos, 1):.2f} ({g.photos}) | {np.median(a.ms):.0f} / {np.percentile(a.ms, 90):.0f} |")
        print(rows[-1], flush=True)
    n_faces = sum(len(i["faces"]) for i in images)
    return "\n".join([
        f"Face detection on {len(images)} photos with {n_faces} labelled faces ({labels.get('source', root)}); "
        f"a face counts as found at IoU >= {IOU_MATCH}. `python benchmarks/faces.py --set {root}`, {threads} threads.",
        f"Machine: {describe(machine_info())}.", "",
        "| detector | recall | false boxes / photo | portraits: exactly their face (n) | groups (3+ faces): recall | "
        "groups: false boxes / photo (n) | ms / photo, median / p90 |",
        "|---|---:|---:|---:|---:|---:|---:|", *rows])


# --------------------------------------------------------------------------- tilted FER faces
def _tilted(face48: np.ndarray, angle: float) -> np.ndarray:
    face = cv2.resize(face48, (192, 192), interpolation=cv2.INTER_LINEAR)
    canvas = cv2.copyMakeBorder(face, 64, 64, 64, 64, cv2.BORDER_REPLICATE)
    m = cv2.getRotationMatrix2D((160, 160), angle, 1.0)
    return cv2.warpAffine(canvas, m, (320, 320), borderMode=cv2.BORDER_REPLICATE)


def tilt_table(data: Path, n: int, threads: int) -> str:
    from vitedge.data.splits import load_splits

    val = load_splits(data, ("val",))["val"]
    idx = np.random.default_rng(0).choice(len(val.labels), min(n, len(val.labels)), replace=False)
    rt = runtimes.load(infer.packaged_model(), runtime="onnx", threads=threads)
    detector = load_detector("blazeface", threads=threads)

    def accuracy(crops: list[np.ndarray], labels: np.ndarray) -> float:
        logits = np.concatenate([rt.predict(np.stack([rt.preprocess(c[None])[0] for c in crops[i:i + 64]]))
                                 for i in range(0, len(crops), 64)])
        return float((logits.argmax(1) == labels).mean())

    def score(frames: list[np.ndarray], found: list[tuple[int, Face]], margin: float, above: float) -> str:
        labels = val.labels[idx][[k for k, _ in found]]
        return f"{accuracy([face_crop(frames[k], f, margin, level_above=above) for k, f in found], labels):.1%}"

    direct = accuracy([val.images[i] for i in idx], val.labels[idx])
    rows, margins = [], ""
    for angle in (0, 15, 30, 45):
        frames = [_tilted(val.images[i], angle if k % 2 else -angle) for k, i in enumerate(idx)]
        found = [(k, f[0]) for k, f in enumerate(detector.detect(np.repeat(fr[:, :, None], 3, 2), 40) for fr in frames) if f]
        cells = [score(frames, found, MARGIN, above) for above in (180.0, 0.0, 10.0, 20.0)]  # 180: never levelled
        rows.append(f"| ±{angle}° | {len(found) / len(idx):.1%} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
        if angle == 0:  # the crop's framing, on the upright faces
            margins = " | ".join(score(frames, found, m, 180.0) for m in (0.0, 0.05, 0.1, 0.2))
    return "\n".join([
        f"{len(idx)} FER-2013 validation faces (PublicTest) upscaled 4x and turned by ±angle in a 320x320 frame; "
        f"BlazeFace finds them, the shipped model names them; default crop margin {MARGIN}, levelled above "
        f"{LEVEL_ABOVE_DEG:g}°. The same faces classified directly at 48x48: {direct:.1%}. "
        f"`python benchmarks/faces.py --tilt --data {data}`.",
        f"Machine: {describe(machine_info())}.", "",
        "| tilt | found | plain crop | levelled always | levelled above 10° | levelled above 20° |",
        "|---|---:|---:|---:|---:|---:|", *rows, "",
        "| upright faces, plain crop: margin | 0 | 0.05 | 0.1 | 0.2 |", "|---|---:|---:|---:|---:|",
        f"| accuracy | {margins} |"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", type=Path, help="folder with labels.json and the photos")
    p.add_argument("--tilt", action="store_true", help="measure eye levelling on FER-2013 validation faces")
    p.add_argument("--sweep", type=int, choices=(0, 1), metavar="HALF",
                   help="with --set: BlazeFace's score threshold on half 0 or 1 of the photos")
    p.add_argument("--data", type=Path, help="a data stage's output folder (with val.npz), for --tilt")
    p.add_argument("--faces", type=int, default=1600, help="validation faces for --tilt (1600)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--md", type=Path, help="also write the table here")
    args = p.parse_args()
    if args.tilt == (args.set is not None) or (args.tilt and args.data is None):
        p.error("give --set DIR, or --tilt with --data DIR")
    if args.tilt:
        table = tilt_table(args.data, args.faces, args.threads)
    elif args.sweep is not None:
        table = threshold_sweep(args.set, args.threads, args.sweep)
    else:
        table = detection_table(args.set, args.threads)
    print("\n" + table)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
