#!/usr/bin/env python3
"""Build a small labelled face-detection benchmark set from public git mirrors.

The set is written as ``images/`` plus ``labels.json``::

    {"source": "...", "licence": "...",
     "images": [{"file": "images/x.jpg", "width": W, "height": H,
                 "faces": [[x, y, w, h], ...], "ignore": [[x, y, w, h], ...],
                 "origin": "fddb|wider_val|wider_train|dlib", "origin_path": "..."}]}

Boxes are integer pixels ``[x, y, w, h]`` (top-left corner, width, height) in
the image's stored pixel orientation (none of the source JPEGs carries an EXIF
rotation; the script checks and refuses otherwise).

Sources (each is a *bare* git directory as produced by ``fetch`` or
``git clone --mirror``; files are read with ``git show``, nothing is checked
out):

``--morghulis GITDIR``
    the-house-of-black-and-white/morghulis.  Its ``test/`` folder holds
    verbatim samples of FDDB (7 images + official ellipse annotations of folds
    1 and 6) and WIDER FACE (4 val + 6 train images + the official
    ``wider_face_{val,train}_bbx_gt.txt`` lines for them).
``--dlib GITDIR``
    davisking/dlib.  ``examples/faces/{training,testing}.xml`` label 9 PASCAL
    VOC photos (group photos, 43 faces) with square face boxes.

Conversion rules:

* FDDB ellipses ``(a, b, theta, cx, cy)`` become the exact axis-aligned
  bounding box of the rotated ellipse: half-width
  ``sqrt(a^2 cos^2 t + b^2 sin^2 t)``, half-height
  ``sqrt(a^2 sin^2 t + b^2 cos^2 t)``, clipped to the image.  (FDDB ellipses
  run from the top of the forehead to the chin, so they are ~20-30 % taller
  than the boxes most detectors emit; consider IoU 0.4 or a looser match for
  FDDB images.)
* WIDER boxes ``x y w h blur expression illumination invalid occlusion pose``
  go to ``faces`` unless ``invalid == 1`` or ``min(w, h) < --wider-min``
  (default 10 px), in which case they go to ``ignore``.
* dlib boxes carrying ``ignore='1'`` go to ``ignore``; others to ``faces``.

Usage::

    python benchmarks/faces_set.py --morghulis /work/.mirror/the-house-of-black-and-white+morghulis/repo \\
                    --dlib /work/.mirror/davisking+dlib/repo \\
                    --out /work/data/faces-bench

Only the standard library and Pillow are needed.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

from PIL import Image

LICENCE = (
    "Mixed; research/non-commercial use only. FDDB images: 'Faces in the Wild' "
    "news photos (Berg et al.), annotations by Jain & Learned-Miller (UMass); "
    "released for research, no explicit licence. WIDER FACE images: from the "
    "WIDER dataset (Yang et al., CUHK) - images are not owned by the authors, "
    "research/non-commercial use only; annotations CC BY-NC-ND 4.0. dlib "
    "examples/faces: PASCAL VOC 2011 Flickr images (Flickr terms of use), box "
    "annotations by D. King distributed with dlib under the Boost Software "
    "License 1.0. Do not redistribute the images outside the project."
)


# --------------------------------------------------------------------------
# git helpers


def git_show(gitdir: str, rev: str, path: str) -> bytes:
    """Return the bytes of ``rev:path`` from the bare repository ``gitdir``."""
    return subprocess.run(
        ["git", f"--git-dir={gitdir}", "show", f"{rev}:{path}"],
        check=True,
        capture_output=True,
    ).stdout


def git_rev(gitdir: str, rev: str = "HEAD") -> str:
    """Resolve ``rev`` to a full commit id."""
    return (
        subprocess.run(
            ["git", f"--git-dir={gitdir}", "rev-parse", f"{rev}^{{commit}}"],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
    )


# --------------------------------------------------------------------------
# geometry


def ellipse_to_box(a: float, b: float, theta: float, cx: float, cy: float):
    """Axis-aligned bounding box (x0, y0, x1, y1) of an FDDB ellipse."""
    c, s = math.cos(theta), math.sin(theta)
    hw = math.sqrt((a * c) ** 2 + (b * s) ** 2)
    hh = math.sqrt((a * s) ** 2 + (b * c) ** 2)
    return cx - hw, cy - hh, cx + hw, cy + hh


def clip_xywh(x0: float, y0: float, x1: float, y1: float, w: int, h: int):
    x0, y0 = max(0.0, x0), max(0.0, y0)
    x1, y1 = min(float(w), x1), min(float(h), y1)
    xi, yi = int(round(x0)), int(round(y0))
    return [xi, yi, int(round(x1)) - xi, int(round(y1)) - yi]


# --------------------------------------------------------------------------
# image output


def save_image(data: bytes, out_dir: str, name: str):
    """Write the original bytes, return (width, height). Refuse EXIF rotation."""
    with Image.open(io.BytesIO(data)) as im:
        orientation = im.getexif().get(0x0112, 1)
        if orientation not in (0, 1):
            raise SystemExit(f"{name}: EXIF orientation {orientation}; boxes would be rotated")
        w, h = im.size
    with open(os.path.join(out_dir, "images", name), "wb") as f:
        f.write(data)
    return w, h


# --------------------------------------------------------------------------
# parsers


def parse_fddb_ellipses(text: str):
    """Yield (image_path_without_ext, [(a, b, theta, cx, cy), ...])."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    i = 0
    while i < len(lines):
        path = lines[i]
        n = int(lines[i + 1])
        ells = [tuple(float(v) for v in lines[i + 2 + k].split()[:5]) for k in range(n)]
        yield path, ells
        i += 2 + n


def parse_wider_gt(text: str):
    """Yield (relative_image_path, [[x, y, w, h, blur, expr, illum, invalid, occl, pose], ...])."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    i = 0
    while i < len(lines):
        path = lines[i]
        n = int(lines[i + 1])
        rows = [[int(v) for v in lines[i + 2 + k].split()] for k in range(n)]
        # Images with no face carry one all-zero placeholder row.
        yield path, rows
        i += 2 + max(n, 1)


# --------------------------------------------------------------------------
# sources


def add_morghulis(gitdir: str, rev: str, out: str, entries: list, wider_min: int):
    base = "test/fddb/FDDB_sample"
    for fold in ("FDDB-fold-01-ellipseList.txt", "FDDB-fold-06-ellipseList.txt"):
        text = git_show(gitdir, rev, f"{base}/FDDB-folds/{fold}").decode()
        for path, ells in parse_fddb_ellipses(text):
            src = f"{base}/originalPics/{path}.jpg"
            name = "fddb__" + path.replace("/", "_") + ".jpg"
            w, h = save_image(git_show(gitdir, rev, src), out, name)
            faces = [clip_xywh(*ellipse_to_box(*e), w, h) for e in ells]
            entries.append(
                dict(file=f"images/{name}", width=w, height=h, faces=faces, ignore=[],
                     origin="fddb", origin_path=f"morghulis@{rev[:12]}:{src}")
            )

    base = "test/widerface/WIDERFACE_sample"
    for split in ("val", "train"):
        text = git_show(gitdir, rev, f"{base}/wider_face_split/wider_face_{split}_bbx_gt.txt").decode()
        for path, rows in parse_wider_gt(text):
            src = f"{base}/WIDER_{split}/images/{path}"
            try:
                data = git_show(gitdir, rev, src)
            except subprocess.CalledProcessError:
                continue  # gt file lists images that the sample does not ship
            name = f"wider_{split}__" + os.path.basename(path)
            w, h = save_image(data, out, name)
            faces, ignore = [], []
            for r in rows:
                x, y, bw, bh, invalid = r[0], r[1], r[2], r[3], r[7]
                if bw <= 0 or bh <= 0:
                    continue
                box = clip_xywh(x, y, x + bw, y + bh, w, h)
                (ignore if invalid == 1 or min(bw, bh) < wider_min else faces).append(box)
            entries.append(
                dict(file=f"images/{name}", width=w, height=h, faces=faces, ignore=ignore,
                     origin=f"wider_{split}", origin_path=f"morghulis@{rev[:12]}:{src}")
            )


def add_dlib(gitdir: str, rev: str, out: str, entries: list):
    for xml_name in ("training.xml", "testing.xml"):
        root = ET.fromstring(git_show(gitdir, rev, f"examples/faces/{xml_name}"))
        for img in root.iter("image"):
            src = f"examples/faces/{img.get('file')}"
            name = "dlib__" + img.get("file")
            w, h = save_image(git_show(gitdir, rev, src), out, name)
            faces, ignore = [], []
            for b in img.iter("box"):
                x, y = int(b.get("left")), int(b.get("top"))
                bw, bh = int(b.get("width")), int(b.get("height"))
                box = clip_xywh(x, y, x + bw, y + bh, w, h)
                (ignore if b.get("ignore") == "1" else faces).append(box)
            entries.append(
                dict(file=f"images/{name}", width=w, height=h, faces=faces, ignore=ignore,
                     origin="dlib", origin_path=f"dlib@{rev[:12]}:{src}")
            )


# --------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--morghulis", help="bare git dir of the-house-of-black-and-white/morghulis")
    ap.add_argument("--morghulis-rev", default="HEAD")
    ap.add_argument("--dlib", help="bare git dir of davisking/dlib")
    ap.add_argument("--dlib-rev", default="HEAD")
    ap.add_argument("--wider-min", type=int, default=10,
                    help="WIDER faces narrower/shorter than this go to 'ignore' (px)")
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = ap.parse_args(argv)
    if not (args.morghulis or args.dlib):
        ap.error("give at least one of --morghulis / --dlib")

    img_dir = os.path.join(args.out, "images")
    if os.path.isdir(img_dir):
        shutil.rmtree(img_dir)
    os.makedirs(img_dir)

    entries: list = []
    sources = []
    if args.morghulis:
        rev = git_rev(args.morghulis, args.morghulis_rev)
        add_morghulis(args.morghulis, rev, args.out, entries, args.wider_min)
        sources.append(f"github.com/the-house-of-black-and-white/morghulis@{rev} test/ (FDDB + WIDER FACE samples)")
    if args.dlib:
        rev = git_rev(args.dlib, args.dlib_rev)
        add_dlib(args.dlib, rev, args.out, entries)
        sources.append(f"github.com/davisking/dlib@{rev} examples/faces (PASCAL VOC photos)")

    entries.sort(key=lambda e: e["file"])
    doc = {"source": "; ".join(sources), "licence": LICENCE, "images": entries}
    with open(os.path.join(args.out, "labels.json"), "w") as f:
        json.dump(doc, f, indent=1)

    n_faces = sum(len(e["faces"]) for e in entries)
    n_single = sum(len(e["faces"]) == 1 for e in entries)
    n_group = sum(len(e["faces"]) >= 3 for e in entries)
    print(f"{len(entries)} images, {n_faces} faces, {n_single} with exactly one face, "
          f"{n_group} with >=3 faces, {sum(len(e['ignore']) for e in entries)} ignore boxes",
          file=sys.stderr)


if __name__ == "__main__":
    main()
