"""`python -m vitedge.web`: the server, and the page in a real browser (headless Chromium driven by
Playwright; skipped with the reason when either is missing).

In the browser: a photo gives the faces and emotions `vitedge.infer` gives with BlazeFace (same
boxes within 1 px: onnxruntime-web against native onnxruntime; same top-1; class probabilities
within 2e-3 of Python's onnxruntime on the same crop; the same 48x48 bytes), and with
`?detector=haar` the Haar cascade's boxes exactly; every step of the BlazeFace port and the pixel
ports (resizes, eye levelling) gives Python's numbers and bytes when fed Python's inputs; the
per-class bars cover no face; class names are text, never HTML; the live mode finds a face in
Chromium's fake camera (a .y4m written here); a photo without a face says so. Without a browser:
the server's headers, routes and config, and its one line for a model that is not an ONNX artefact.

VITEDGE_WEB_SCREENSHOT=docs/web.png makes the still-image test save the page as shown.
"""
from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitedge import infer
from vitedge.faces import Face, align, blazeface, draw, haar, iou, load_detector
from vitedge.preprocess import Preprocess, to_gray_uint8
from vitedge.runtimes.onnx_rt import dynamic_activations
from vitedge.web import server as web

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_MS = 180_000  # a 2-core CI box running other tests: detection alone can take seconds
# dynamic int8 quantises activations per call, and onnxruntime-web's int8 kernels round differently
# from native ORT's: on the same crop bytes the crowd photo's faces differ by up to 1.2e-3
MAX_PROB_DIFF = 2e-3


# --------------------------------------------------------------------------- photos and the server
@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The astronaut, two faces in a webcam-sized frame, a photo larger than the Haar detection size,
    a crowd (heads of 30 to 300 px and a tilted one, over BlazeFace's tiled levels), a face-less
    gradient, and a fake-camera video of the astronaut."""
    from skimage.data import astronaut

    d = tmp_path_factory.mktemp("web-photos")
    rgb = astronaut()
    Image.fromarray(rgb).save(d / "astronaut.png")
    face = rgb[30:200, 150:300]
    frame = np.full((480, 640, 3), 120, np.uint8)
    frame[40:210, 40:190] = face
    big_face = np.asarray(Image.fromarray(face).resize((255, 289)))
    frame[150:439, 330:585] = big_face
    Image.fromarray(frame).save(d / "two-faces.png")
    Image.fromarray(rgb).resize((1500, 1500), Image.BICUBIC).save(d / "large.png")  # > 1280: INTER_AREA first
    crowd(rgb).save(d / "crowd.png")
    ramp = np.tile(np.linspace(0, 255, 320).astype(np.uint8), (240, 1))
    Image.fromarray(ramp).save(d / "gradient.png")
    video = np.full((480, 640, 3), 90, np.uint8)
    video[:, 64:576] = rgb[16:496]
    write_y4m(d / "face.y4m", video)
    return d


def crowd(rgb: np.ndarray) -> Image.Image:
    """1600x1200: eight astronaut heads whose face boxes are 30 to 300 px, one tilted 32 degrees (the
    page levels it by the eyes), so BlazeFace needs its tiled finer level (6 x 4 tiles)."""
    head = Image.fromarray(rgb[20:220, 130:320])  # its face box is about 105 px
    canvas = Image.new("RGB", (1600, 1200), (118, 128, 140))
    for face, x, y, tilt in [(300, 80, 120, 0), (160, 760, 90, 0), (90, 1200, 200, 0), (60, 1450, 700, 0),
                             (40, 300, 800, 0), (30, 700, 1000, 0), (32, 1000, 820, 0), (150, 500, 560, -32)]:
        s = face / 105
        h = head.resize((round(190 * s), round(200 * s)), Image.BICUBIC)
        if tilt:
            h = h.rotate(tilt, resample=Image.BICUBIC, expand=True, fillcolor=(118, 128, 140))
        canvas.paste(h, (x, y))
    return canvas


def write_y4m(path: Path, rgb: np.ndarray, frames: int = 5) -> None:
    """A YUV4MPEG2 file (4:2:0, full-range BT.601 as JPEG) of `frames` copies of one picture:
    what Chromium's --use-file-for-fake-video-capture plays as the webcam."""
    h, w = rgb.shape[:2]
    ycc = np.asarray(Image.fromarray(rgb).convert("YCbCr"))

    def sub(c: np.ndarray) -> bytes:
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)).round().astype(np.uint8).tobytes()

    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + ycc[..., 0].tobytes() + sub(ycc[..., 1]) + sub(ycc[..., 2]))


def start_server(*args: str) -> tuple[subprocess.Popen, str]:
    """`python -m vitedge.web --port 0 ...` as a user runs it; returns (process, base URL)."""
    err = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty server never blocks on it
    proc = subprocess.Popen([sys.executable, "-m", "vitedge.web", "--host", "127.0.0.1", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the line with the URL, printed once it listens
    if "http://" not in line:
        proc.kill()
        proc.wait()
        err.seek(0)
        raise AssertionError(f"vitedge.web did not start: {line}{err.read()}")
    url = line[line.index("http://"):].split()[0]
    assert url.startswith("http://127.0.0.1:")
    return proc, url


@pytest.fixture(scope="module")
def server():
    proc, url = start_server()
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def photo_host(photos):
    """The photos on another origin (another port) with CORS, as a ?image=<url> from elsewhere."""
    class CORS(http.server.SimpleHTTPRequestHandler):
        def end_headers(self):
            self.send_header("Access-Control-Allow-Origin", "*")
            super().end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(CORS, directory=str(photos)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def get(url: str):
    """(status, headers (case-insensitive), body)"""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, b""


# --------------------------------------------------------------------------- the server alone
def test_server_headers_routes_and_config(server):
    status, headers, body = get(server + "/")
    assert status == 200 and b'src="app.mjs"' in body
    for name, value in web.ISOLATION_HEADERS.items():  # cross-origin isolation: what WASM threads need
        assert headers[name] == value
    status, headers, _ = get(server + "/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm")
    assert status == 200 and headers["Content-Type"] == "application/wasm"
    assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert get(server + "/app.mjs")[1]["Content-Type"] == "text/javascript"

    config = json.loads(get(server + "/config.json")[2])
    # vitedge.infer's and vitedge.faces' own settings
    assert config["margin"] == align.MARGIN and config["level_above_deg"] == align.LEVEL_ABOVE_DEG
    assert config["top_k"] == infer.TOP_K and config["detector"]["name"] == "blazeface"
    bf, cascade_cfg = config["detector"]["blazeface"], config["detector"]["haar"]
    assert bf["min_face"] == infer.MIN_FACE["blazeface"] and bf["min_face_video"] == infer.MIN_FACE_VIDEO
    for name in ("input", "det_min", "tile_max", "level_ratio", "max_level_side", "score_min", "nms_iou"):
        assert bf[name] == getattr(blazeface, name.upper()), name
    assert cascade_cfg["min_face"] == infer.MIN_FACE["haar"] and cascade_cfg["max_side"] == haar.MAX_SIDE
    assert config["colours"]["happy"] == list(draw.COLOURS["happy"])
    assert config["ort"]["wasm"] is True
    art, meta = web.resolve_model(None)  # the shipped model, found as vitedge.infer finds it
    assert art == infer.packaged_model() / "onnx-int8"
    assert json.loads(get(server + "/" + config["model"]["meta"])[2]) == web.page_meta(meta)  # stripped
    assert config["model"]["one_face_per_call"] is True  # dynamic int8: one face per call, as vitedge.infer
    for quantization in ({"method": {"kind": "dynamic"}}, {"method": {"kind": "static"}}, None):
        other = {**meta, "quantization": quantization}
        assert web.page_config(other)["model"]["one_face_per_call"] == dynamic_activations(other)
    model = get(server + "/" + config["model"]["file"])[2]
    assert model == (art / meta["file"]).read_bytes()
    status, headers, detector = get(server + "/" + bf["model"])  # the ONNX file vitedge.infer runs
    assert status == 200 and detector == blazeface.model_path().read_bytes()
    assert headers["Content-Type"] == "application/octet-stream"
    cascade = json.loads(get(server + "/" + cascade_cfg["cascade"])[2])
    assert (cascade["width"], cascade["height"]) == (24, 24) and len(cascade["stages"]) == 25

    assert get(server + "/vendor/")[0] == 404  # no directory listings
    assert get(server + "/../server.py")[0] == 404
    assert get(server + "/model/../meta.json")[0] == 404


def test_refuses_a_model_that_is_not_an_onnx_artefact(tmp_path):
    not_model = tmp_path / "notes.txt"
    not_model.write_text("hello\n")
    other = tmp_path / "student" / "executorch-int8"
    other.mkdir(parents=True)
    (other / "model.pte").write_bytes(b"\0")
    shipped = json.loads((web.resolve_model(None)[0] / "meta.json").read_text())  # a complete meta.json ...
    (other / "meta.json").write_text(json.dumps({**shipped, "format": "executorch", "file": "model.pte"}))  # ... of a .pte
    for bad, says in [(not_model, "not an ONNX artefact"), (other, "executorch artefact"),
                      (other.parent, "holds no ONNX artefact"), (tmp_path / "missing", "not found")]:
        run = subprocess.run([sys.executable, "-m", "vitedge.web", "--model", str(bad), "--port", "0"],
                             capture_output=True, text=True, timeout=120, cwd=REPO)
        assert run.returncode == 3, (bad, run.stdout, run.stderr)
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], run.stderr
        assert "Traceback" not in run.stderr and run.stdout == ""


def test_cascade_json_is_the_one_infer_uses():
    import cv2

    doc = web.cascade_json()
    assert web.cascade_path() == Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    n_weak = sum(len(s["weak"]) for s in doc["stages"])
    assert n_weak == 2913 and len(doc["features"]) == 2913  # the frontal-face cascade's stumps
    assert doc["stages"][0]["threshold"] == pytest.approx(-5.0425500869750977)


# --------------------------------------------------------------------------- the page in Chromium
def chromium_path() -> str | None:
    for candidate in (os.environ.get("VITEDGE_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                      shutil.which("google-chrome")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser(photos):
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=[
            "--no-sandbox", "--disable-dev-shm-usage",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={photos / 'face.y4m'}"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 700})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, errors


def wait_frame(page, frame: int = 1) -> dict:
    """Wait for the `frame`-th classified frame or photo; return #results as data."""
    page.wait_for_function(f"Number(document.querySelector('#results').dataset.frame || 0) >= {frame}",
                           timeout=TIMEOUT_MS)
    return page.evaluate("""() => {
        const r = document.querySelector('#results');
        return {status: r.dataset.status, mode: r.dataset.mode, message: r.dataset.message, frame: +r.dataset.frame,
                faces: [...r.querySelectorAll('.face')].map(f => ({emotion: f.dataset.emotion,
                    confidence: +f.dataset.confidence, probs: JSON.parse(f.dataset.probs), box: JSON.parse(f.dataset.box)})),
                crops: (window.vitedge.lastCrops || []).map(c => Array.from(c)),
                page_faces: (window.vitedge.lastFaces || []).map(f => ({box: f.box, score: f.score,
                    keypoints: f.keypoints})),
                stats: {...document.querySelector('#stats').dataset}};
    }""")


def wait_ready(page) -> None:
    page.wait_for_function("window.vitedge && window.vitedge.state.session && !document.querySelector('#camera').disabled",
                           timeout=TIMEOUT_MS)


def python_reference(path: Path, detector: str = "blazeface"):
    """What vitedge.infer says about a photo (boxes, emotions, top-3) with the same artefact, runtime
    and detector, the 48x48 bytes of its crops, and a function giving Python onnxruntime's
    probabilities and 48x48 bytes for the faces the page found. The shipped model is dynamic int8,
    whose activation ranges are taken over the whole call: vitedge.infer and the page run it one face
    per call (config.json: model.one_face_per_call), and so does the reference."""
    import onnxruntime as ort

    art, meta = web.resolve_model(None)
    out = _Buffer()
    code = infer.run(infer.parse_args(["--json", "--runtime", "onnx", "--model", str(art), "--detector", detector,
                                       str(path)]), out=out, err=_Buffer())
    faces = json.loads(out.text)["images"][0]["faces"] if code == infer.EXIT_OK else []
    rgb = infer.to_rgb_uint8(infer.read_image(path))
    gray = to_gray_uint8(Image.fromarray(rgb))
    pre = Preprocess.from_dict(meta["preprocess"])
    found = load_detector(detector).detect(rgb, infer.MIN_FACE[detector])  # what infer cropped
    py_crops48 = [pre.resize_uint8(align.face_crop(gray, f)[None])[0] for f in found]
    session = ort.InferenceSession(str(art / meta["file"]), providers=["CPUExecutionProvider"])
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    unfused = ort.InferenceSession(str(art / meta["file"]), plain, providers=["CPUExecutionProvider"])

    def softmax(sess, x):
        batches = np.split(x, len(x)) if web.page_config(meta)["model"]["one_face_per_call"] else [x]
        logits = np.concatenate([sess.run(None, {meta["input"]["name"]: b})[0] for b in batches]).astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def probs_of(page_faces):
        """Python's probabilities, the 48x48 bytes, and the tolerance: with dynamic int8 an
        activation near a rounding boundary can land on either side, so two native kernel paths
        (ORT's optimised graph and the plain one) already differ; the page (another ORT build,
        WebAssembly kernels) may differ as much as twice that, and never more than MAX_PROB_DIFF
        where they agree closely."""
        crops = [align.face_crop(gray, as_face(f)) for f in page_faces]
        x = np.concatenate([pre(c[None]) for c in crops])
        probs = softmax(session, x)
        tol = max(MAX_PROB_DIFF, 2 * float(np.abs(softmax(unfused, x) - probs).max()))
        return probs, [pre.resize_uint8(c[None])[0] for c in crops], tol

    return faces, py_crops48, probs_of, meta


def as_face(page_face: dict) -> Face:
    kps = page_face["keypoints"]
    return Face(box=tuple(page_face["box"]), score=page_face["score"], keypoints=None if kps is None else np.array(kps))


class _Buffer:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s


def pair_boxes(page: list[list[int]], python: list[list[int]]) -> list[int]:
    """For each of Python's boxes, the index of the page's box overlapping it most (one each)."""
    xywh = [tuple(map(float, b)) for b in page]
    order = [max(range(len(page)), key=lambda j: iou(xywh[j], tuple(map(float, b)))) for b in python]
    assert sorted(order) == list(range(len(page))), (page, python)
    return order


def assert_matches_python(result: dict, path: Path, detector: str = "blazeface") -> None:
    faces, py_crops48, probs_of, meta = python_reference(path, detector)
    assert result["status"] == "ok", result
    assert result["stats"]["detector"] == detector
    py_boxes = [[f["box"][k] for k in "xywh"] for f in faces]
    page_boxes = [f["box"] for f in result["faces"]]
    assert len(page_boxes) == len(py_boxes), (page_boxes, py_boxes)
    pairs = pair_boxes(page_boxes, py_boxes)
    gap = max(np.abs(np.subtract(page_boxes[j], b)).max() for j, b in zip(pairs, py_boxes))
    # the Haar port is bit-exact; BlazeFace's boxes move by onnxruntime-web's float rounding
    assert gap <= (0 if detector == "haar" else 1), (page_boxes, py_boxes)
    probs, crops48, tol = probs_of(result["page_faces"])
    for face, crop, p, crop48 in zip(result["faces"], result["crops"], probs, crops48):
        np.testing.assert_array_equal(np.asarray(crop, np.uint8).reshape(crop48.shape), crop48)  # same bytes
        assert np.abs(np.asarray(face["probs"]) - p).max() <= tol, (face["probs"], p.tolist(), tol)
        assert face["confidence"] == pytest.approx(p.max(), abs=tol) and face["emotion"] in meta["classes"]
    # a tilted face is levelled by its eyes, whose keypoints move with the float rounding too: where
    # every crop is Python's, the numbers are infer's
    same_crops = all(np.array_equal(np.asarray(result["crops"][j], np.uint8).reshape(c.shape), c)
                     for j, c in zip(pairs, py_crops48))
    for j, py in zip(pairs, faces):
        assert result["faces"][j]["emotion"] == py["emotion"], (result["faces"][j], py)  # same top-1
        for top in py["top"] if same_crops else []:  # vitedge.infer's own numbers (rounded to 4 decimals)
            assert abs(result["faces"][j]["probs"][meta["classes"].index(top["emotion"])] - top["p"]) <= tol
    print(f"\n{path.name} ({detector}): {len(py_boxes)} faces, boxes at most {gap} px from vitedge.infer's, "
          f"{'the same' if same_crops else 'not all the same'} crops, detection "
          f"{float(result['stats']['detectMs']):.0f} ms")


def test_still_image_gives_what_python_gives(page, server, photo_host, photos):
    # a photo from another origin (CORS), on two WebAssembly threads (the default on 2 cores is one)
    page.goto(f"{server}/?image={photo_host}/astronaut.png&threads=2&backend=wasm")
    result = wait_frame(page)
    assert result["mode"] == "image" and len(result["faces"]) == 1
    assert_matches_python(result, photos / "astronaut.png")
    stats = result["stats"]
    assert stats["backend"] == "wasm" and stats["isolated"] == "true" and stats["simd"] == "true"
    assert stats["threads"] == "2" and float(stats["modelMs"]) > 0 and float(stats["detectMs"]) > 0
    assert stats["detector"] == "blazeface"  # the page's default, as vitedge.infer's
    print(f"\nin-browser latency (headless Chromium, {stats['backend']}, {stats['threads']} threads): "
          f"model {float(stats['modelMs']):.2f} ms per face (median of 30), detection {float(stats['detectMs']):.0f} ms "
          "(512x512)")
    shot = os.environ.get("VITEDGE_WEB_SCREENSHOT")
    if shot:
        import io

        png = Image.open(io.BytesIO(page.screenshot()))
        png.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(shot, optimize=True)


def test_photos_chosen_in_the_page_match_python(page, server, photos):
    """Two faces at two sizes, a large photo and the crowd (BlazeFace's tiled level, a levelled face);
    the per-class bars drawn over the crowd cover no face and no label."""
    page.goto(f"{server}/?mode=image")
    wait_ready(page)
    for n, name in enumerate(["two-faces.png", "large.png", "crowd.png"], start=1):
        page.set_input_files("#file", str(photos / name))
        result = wait_frame(page, n)
        assert result["faces"], name
        assert_matches_python(result, photos / name)
    layout = page.evaluate("window.vitedge.lastLayout")
    assert len(layout["boxes"]) == 8 and layout["bars"]  # the crowd: its 8 heads
    assert_bars_clear(layout, *page.evaluate("[document.querySelector('#overlay').clientWidth, "
                                             "document.querySelector('#overlay').clientHeight]"))


def test_haar_in_the_page_finds_the_cascades_boxes_exactly(page, server, photos):
    page.goto(f"{server}/?mode=image&detector=haar")
    wait_ready(page)
    for n, name in enumerate(["astronaut.png", "two-faces.png"], start=1):
        page.set_input_files("#file", str(photos / name))
        result = wait_frame(page, n)
        assert_matches_python(result, photos / name, detector="haar")


def overlaps(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def assert_bars_clear(layout: dict, width: float, height: float) -> None:
    """No bar panel covers a face box, a label or another panel; every label and panel is inside."""
    for k, bar in enumerate(layout["bars"]):
        assert not any(overlaps(bar, r) for r in layout["boxes"] + layout["labels"] + layout["bars"][:k]), bar
    for r in layout["labels"] + layout["bars"]:
        assert r[0] >= 0 and r[1] >= 0 and r[0] + r[2] <= width + 1e-6 and r[1] + r[3] <= height + 1e-6, r


def test_bars_never_cover_a_face(page, server):
    """The overlay module alone, on crowded layouts: bars go beside a face only where they fit."""
    page.goto(f"{server}/?mode=image")
    wait_ready(page)
    rng = np.random.default_rng(0)
    layouts = []
    for _ in range(20):
        n = int(rng.integers(1, 12))
        sizes = rng.integers(20, 260, n)
        boxes = [[int(rng.integers(0, 800 - s)), int(rng.integers(0, 600 - s)), int(s), int(s)] for s in sizes]
        layouts.append(boxes)
    got = page.evaluate("""async (layouts) => {
        const { drawFaces } = await import('./overlay.mjs');
        const ctx = new OffscreenCanvas(800, 600).getContext('2d');
        const { classes } = window.vitedge.state.meta, colours = window.vitedge.state.config.colours;
        return layouts.map((boxes) => drawFaces(ctx, {width: 800, height: 600, sx: 1, sy: 1, mirror: false, classes,
            colours, boxes, probs: boxes.map(() => classes.map((_, j) => (j + 1) / 28)), note: null}));
    }""", layouts)
    assert sum(len(g["bars"]) for g in got) > 20  # most faces do get their bars
    for layout in got:
        assert_bars_clear(layout, 800, 600)


def test_class_names_are_text_never_html(browser, photos, tmp_path):
    """A class name from meta.json that looks like HTML is shown as those characters (issue 23)."""
    art, meta = web.resolve_model(None)
    shutil.copytree(art, tmp_path / "onnx-int8")
    meta = {**meta, "classes": ['<img id="injected" src="x">', *meta["classes"][1:]]}
    (tmp_path / "onnx-int8" / "meta.json").write_text(json.dumps(meta))
    proc, url = start_server("--model", str(tmp_path / "onnx-int8"))
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{url}?mode=image")
        wait_ready(page)
        page.set_input_files("#file", str(photos / "astronaut.png"))
        wait_frame(page)
        assert page.locator("#injected").count() == 0
        assert meta["classes"][0] in page.text_content("#results")
    finally:
        context.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_js_ports_match_opencv_and_pillow_bit_for_bit(page, server):
    """The page's ports, run in the browser on the same bytes as Python: OpenCV's cascade (every
    candidate window before grouping), equalizeHist, INTER_LINEAR_EXACT and INTER_AREA, and
    Pillow's bilinear resize (including the tall crops Pillow >= 13 resizes vertically first)."""
    import cv2
    from skimage import data as skdata

    page.goto(f"{server}/?mode=image")
    wait_ready(page)
    rng = np.random.default_rng(0)
    gray = {"camera": skdata.camera(), "astronaut": np.asarray(Image.fromarray(skdata.astronaut()).convert("L"))}
    gray["odd"] = np.ascontiguousarray(gray["astronaut"][37:400, 11:344])
    cascade = haar._cascade()
    cases = []
    for name, g in gray.items():
        raw = cascade.detectMultiScale(cv2.equalizeHist(g), scaleFactor=1.1, minNeighbors=0, minSize=(40, 40))
        cases.append({"name": name, "w": g.shape[1], "h": g.shape[0], "px": base64.b64encode(g.tobytes()).decode(),
                      "eq": base64.b64encode(cv2.equalizeHist(g).tobytes()).decode(),
                      "linear": base64.b64encode(cv2.resize(g, (201, 177), interpolation=cv2.INTER_LINEAR_EXACT).tobytes()).decode(),
                      "area": base64.b64encode(cv2.resize(g, (173, 131), interpolation=cv2.INTER_AREA).tobytes()).decode(),
                      "raw": sorted(map(list, np.asarray(raw).reshape(-1, 4).tolist()))})
    pre = Preprocess()
    crops = []
    for w, h in [(93, 93), (48, 300), (30, 211), (120, 64), (47, 49), (5, 167), (200, 77), (333, 517)]:
        c = rng.integers(0, 256, (h, w), dtype=np.uint8)
        crops.append({"w": w, "h": h, "px": base64.b64encode(c.tobytes()).decode(),
                      "out": base64.b64encode(pre.resize_uint8(c[None])[0].tobytes()).decode()})
    config = json.loads(get(server + "/config.json")[2])
    got = page.evaluate("""async ({cases, crops, cascadeUrl, vFirst}) => {
        const haar = await import('./haar.mjs'), ops = await import('./imageops.mjs');
        const bytes = (b64) => Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);
        const cascade = new haar.HaarCascade(await (await fetch(cascadeUrl)).json());
        const out = {};
        for (const c of cases) {
            const img = {data: bytes(c.px), width: c.w, height: c.h};
            const eq = ops.equalizeHist(img);
            const raw = cascade.detectMultiScale(eq, {scaleFactor: 1.1, minNeighbors: 0, minSize: 40})
                .sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2] || a[3] - b[3]);
            out[c.name] = {eq: same(eq.data, bytes(c.eq)), linear: same(ops.resizeLinearExactCV(img, 201, 177).data, bytes(c.linear)),
                           area: same(ops.resizeAreaCV(img, 173, 131).data, bytes(c.area)), raw};
        }
        out.crops = crops.map(c => same(ops.resizePIL({data: bytes(c.px), width: c.w, height: c.h}, 48, 48,
                                                      {verticalFirst: vFirst}).data, bytes(c.out)));
        return out;
    }""", {"cases": cases, "crops": crops, "cascadeUrl": config["detector"]["haar"]["cascade"],
           "vFirst": config["preprocess"]["pil_vertical_first"]})
    for case in cases:
        res = got[case["name"]]
        assert res["eq"] and res["linear"] and res["area"], (case["name"], res)
        assert res["raw"] == case["raw"] and len(case["raw"]) > 3, case["name"]  # every window OpenCV accepts
    assert got["crops"] == [True] * len(crops)


def test_blazeface_port_gives_pythons_numbers(page, server, photos):
    """Each step of blazeface.mjs and align.mjs fed Python's own inputs gives Python's numbers: the
    pyramid plans, Pillow's RGB resize of every level, every tile's float32 input, then decoding, the
    keep rule, weighted NMS and calibration replayed on native onnxruntime's raw outputs (so the
    model's float rounding is out of the picture), and the crops, levelled (cv2.warpAffine, also at
    the photo's edges) or not."""
    import hashlib

    page.goto(f"{server}/?mode=image")
    wait_ready(page)
    config = json.loads(get(server + "/config.json")[2])
    cfg, v_first = config["detector"]["blazeface"], config["preprocess"]["pil_vertical_first"]
    sizes = [(512, 512, 20), (1600, 1200, 20), (640, 480, 40), (4000, 300, 20), (100, 3000, 12), (257, 256, 1)]
    plans = [[[lv.scale, lv.width, lv.height, [list(t) for t in lv.tiles]] for lv in blazeface.plan_levels(*size)]
             for size in sizes]
    rgb = np.asarray(Image.open(photos / "crowd.png").convert("RGB"))
    height, width = rgb.shape[:2]
    detector, digest = blazeface.BlazeFace(), (lambda a: hashlib.sha256(a.tobytes()).hexdigest())
    resized, tiles, raw = [], [], []
    for lv in blazeface.plan_levels(width, height, cfg["min_face"]):
        level = blazeface.resize_rgb(rgb, lv.width, lv.height)
        resized.append(digest(level))
        for tile in lv.tiles:
            x = blazeface.tile_input(level, *tile)
            tiles.append(digest(x))
            scores, boxes = detector.run_tile(x)
            raw.append(base64.b64encode(np.concatenate([scores, boxes.ravel()]).astype(np.float32).tobytes()).decode())
    faces = detector.detect(rgb, cfg["min_face"])
    gray = to_gray_uint8(Image.fromarray(rgb))
    rng = np.random.default_rng(1)
    tilted = []  # eyes at 25-70 degrees either way, some boxes running off the photo
    for _ in range(12):
        w = float(rng.uniform(30, 300))
        x, y = float(rng.uniform(-0.3 * w, width - 0.7 * w)), float(rng.uniform(-0.3 * w, height - 0.7 * w))
        a = np.radians(rng.uniform(25, 70) * rng.choice([-1, 1]))
        eyes = np.array([[-1, 0], [1, 0]]) * 0.25 * w @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
        tilted.append(Face(box=(x, y, w, w * 1.05), score=1.0,
                           keypoints=np.vstack([eyes + (x + w / 2, y + w / 2), np.zeros((4, 2))])))
    as_js = lambda f: {"box": list(f.box), "score": f.score, "keypoints": f.keypoints.tolist()}  # noqa: E731
    got = page.evaluate("""async ({rgbB64, width, height, raw, sizes, cfg, vFirst, faces, tilted, margin, levelAbove}) => {
        const bf = await import('./blazeface.mjs'), al = await import('./align.mjs'), ops = await import('./imageops.mjs');
        const bytes = (b64) => Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const hex = async (a) => Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', a)),
                                            b => b.toString(16).padStart(2, '0')).join('');
        const rgb = bytes(rgbB64), rgba = new Uint8ClampedArray(width * height * 4).fill(255);
        for (let i = 0; i < width * height; i++) rgba.set(rgb.subarray(3 * i, 3 * i + 3), 4 * i);
        const out = {resized: [], tiles: [], plans: sizes.map(([w, h, m]) =>
            bf.planLevels(w, h, m, cfg).map(l => [l.scale, l.width, l.height, l.tiles]))};
        const planes = ops.toPlanes(rgba, width, height);
        const detector = new bf.BlazeFace(null, null, cfg);
        let k = 0;
        detector.runTile = async (input) => {  // native onnxruntime's outputs for this tile
            out.tiles.push(await hex(input));
            const f = new Float32Array(bytes(raw[k++]).buffer);
            return {scores: f.subarray(0, 896), boxes: f.subarray(896)};
        };
        out.faces = await detector.detect(width, height, cfg.min_face, async (lv) => {
            const p = bf.resizePlanes(planes, lv.width, lv.height, vFirst), rgbLevel = new Uint8Array(lv.width * lv.height * 3);
            p.forEach((plane, c) => plane.data.forEach((v, i) => { rgbLevel[3 * i + c] = v; }));
            out.resized.push(await hex(rgbLevel));
            return p;
        });
        const gray = ops.toGray(rgba, width, height);
        out.crops = faces.map(f => Array.from(ops.resizePIL(al.faceCrop(gray, f, margin, levelAbove), 48, 48,
                                                            {verticalFirst: vFirst}).data));
        out.tilted = tilted.map(f => Array.from(al.faceCrop(gray, f, margin, levelAbove).data));
        return out;
    }""", {"rgbB64": base64.b64encode(rgb.tobytes()).decode(), "width": width, "height": height, "raw": raw,
           "sizes": sizes, "cfg": cfg, "vFirst": v_first, "faces": [as_js(f) for f in faces],
           "tilted": [as_js(f) for f in tilted], "margin": config["margin"], "levelAbove": config["level_above_deg"]})
    assert got["plans"] == plans
    assert got["resized"] == resized and got["tiles"] == tiles  # Pillow's bytes, the same float32 input
    assert len(got["faces"]) == len(faces) == 8
    for js, py in zip(got["faces"], faces):
        np.testing.assert_allclose(js["box"], py.box, rtol=0, atol=1e-9)
        np.testing.assert_allclose(js["keypoints"], py.keypoints, rtol=0, atol=1e-9)
        assert js["score"] == pytest.approx(py.score, abs=1e-12)
    pre = Preprocess()
    assert any(abs(align.eye_angle(f)) > align.LEVEL_ABOVE_DEG for f in faces)  # the tilted head is levelled
    for js, py in zip(got["crops"], faces):
        np.testing.assert_array_equal(np.asarray(js, np.uint8).reshape(48, 48),
                                      pre.resize_uint8(align.face_crop(gray, py)[None])[0])
    for js, py in zip(got["tilted"], tilted):
        np.testing.assert_array_equal(np.asarray(js, np.uint8), align.face_crop(gray, py).ravel())


def test_photo_without_a_face_says_so(page, server, photos):
    page.goto(f"{server}/?mode=image")
    wait_ready(page)
    data = base64.b64encode((photos / "gradient.png").read_bytes()).decode()
    transfer = page.evaluate_handle("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'gradient.png', {type: 'image/png'}));
        return dt;
    }""", data)
    page.dispatch_event("#stage", "drop", {"dataTransfer": transfer})  # dropped on the page
    result = wait_frame(page)
    assert result["status"] == "no-face" and result["faces"] == []
    assert "No face found" in result["message"]
    assert "No face" in page.text_content("#status")


def test_live_camera_shows_a_face_and_an_emotion(page, server):
    t0 = time.time()
    page.goto(server + "/")  # the camera starts by itself: Chromium's fake camera plays the .y4m
    result = wait_frame(page, 3)
    assert result["mode"] == "live" and result["status"] == "ok", result
    (face,) = result["faces"]
    x, y, w, h = face["box"]
    assert 64 + 150 < x + w / 2 < 64 + 300 and 16 + 30 < y + h / 2 < 16 + 200  # the astronaut's face
    meta = web.resolve_model(None)[1]
    assert face["emotion"] in meta["classes"] and 0 < face["confidence"] <= 1
    assert abs(sum(face["probs"]) - 1) < 1e-6
    stats = result["stats"]
    assert float(stats["fps"]) > 0 and float(stats["modelMs"]) > 0 and stats["detector"] == "blazeface"
    later = wait_frame(page, result["frame"] + 3)  # frames keep coming (speed: benchmarks/web_live.py)
    assert later["status"] == "ok" and len(later["faces"]) == 1
    print(f"\nlive: {float(stats['fps']):.1f} frames/s, model {float(stats['modelMs']):.2f} ms per face, "
          f"detection {float(stats['detectMs']):.0f} ms (640x480), {time.time() - t0:.0f} s to 3 frames")
