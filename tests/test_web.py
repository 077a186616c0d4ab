"""`python -m vitedge.web`: the server, and the page in a real browser (headless Chromium driven by
Playwright; skipped with the reason when either is missing).

In the browser: a photo gives the faces and emotions `vitedge.infer` gives (same boxes, same
top-1, class probabilities within 1e-3 of Python's onnxruntime on the same crop, the same 48x48
bytes); the live mode finds a face in Chromium's fake camera (a .y4m written here); a photo
without a face says so. Without a browser: the server's headers, routes and config, and its one
line for a model that is not an ONNX artefact.

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
from vitedge.preprocess import Preprocess, to_gray_uint8
from vitedge.web import server as web

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_MS = 180_000  # a 2-core CI box running other tests: detection alone can take seconds
MAX_PROB_DIFF = 1e-3


# --------------------------------------------------------------------------- photos and the server
@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The astronaut, two faces in a webcam-sized frame, a photo larger than infer's detection size,
    a face-less gradient, and a fake-camera video of the astronaut."""
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
    ramp = np.tile(np.linspace(0, 255, 320).astype(np.uint8), (240, 1))
    Image.fromarray(ramp).save(d / "gradient.png")
    video = np.full((480, 640, 3), 90, np.uint8)
    video[:, 64:576] = rgb[16:496]
    write_y4m(d / "face.y4m", video)
    return d


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
    assert config["margin"] == 0.2 and config["top_k"] == infer.TOP_K  # vitedge.infer's own settings
    assert config["detector"]["min_face"] == 40 and config["detector"]["max_side"] == infer.DETECT_MAX_SIDE
    assert config["ort"]["wasm"] is True
    art, meta = web.resolve_model(None)  # the shipped model, found as vitedge.infer finds it
    assert art == infer.packaged_model() / "onnx-int8"
    assert json.loads(get(server + "/" + config["model"]["meta"])[2]) == web.page_meta(meta)  # stripped
    model = get(server + "/" + config["model"]["file"])[2]
    assert model == (art / meta["file"]).read_bytes()
    cascade = json.loads(get(server + "/" + config["detector"]["cascade"])[2])
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
                stats: {...document.querySelector('#stats').dataset}};
    }""")


def wait_ready(page) -> None:
    page.wait_for_function("window.vitedge && window.vitedge.state.session && !document.querySelector('#camera').disabled",
                           timeout=TIMEOUT_MS)


def python_reference(path: Path):
    """What vitedge.infer says about a photo (boxes, emotions, top-3) with the same artefact and
    runtime, and a function giving Python onnxruntime's probabilities and 48x48 bytes for given
    boxes. The shipped model is dynamic int8, whose activation ranges are taken over the whole
    batch: like vitedge.infer, the page classifies all faces of a photo in one batch, so the
    reference does too."""
    import onnxruntime as ort

    art, meta = web.resolve_model(None)
    out = _Buffer()
    code = infer.run(infer.parse_args(["--json", "--runtime", "onnx", "--model", str(art), str(path)]),
                     out=out, err=_Buffer())
    faces = json.loads(out.text)["images"][0]["faces"] if code == infer.EXIT_OK else []
    gray = to_gray_uint8(infer.read_image(path))
    pre = Preprocess.from_dict(meta["preprocess"])
    session = ort.InferenceSession(str(art / meta["file"]), providers=["CPUExecutionProvider"])
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    unfused = ort.InferenceSession(str(art / meta["file"]), plain, providers=["CPUExecutionProvider"])

    def softmax(sess, x):
        logits = sess.run(None, {meta["input"]["name"]: x})[0].astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def probs_of(boxes):
        """Python's probabilities, the 48x48 bytes, and the tolerance: with dynamic int8 an
        activation near a rounding boundary can land on either side, so two native kernel paths
        (ORT's optimised graph and the plain one) already differ; the page (another ORT build,
        WebAssembly kernels) may differ as much as twice that, and never more than MAX_PROB_DIFF
        where they agree closely."""
        crops = [infer.crop_face(gray, tuple(b), 0.2) for b in boxes]
        x = np.concatenate([pre(c[None]) for c in crops])
        probs = softmax(session, x)
        tol = max(MAX_PROB_DIFF, 2 * float(np.abs(softmax(unfused, x) - probs).max()))
        return probs, [pre.resize_uint8(c[None])[0] for c in crops], tol

    return faces, probs_of, meta


class _Buffer:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s


def assert_matches_python(result: dict, path: Path) -> None:
    faces, probs_of, meta = python_reference(path)
    assert result["status"] == "ok", result
    py_boxes = [[f["box"][k] for k in "xywh"] for f in faces]
    assert [f["box"] for f in result["faces"]] == py_boxes  # the Haar cascade port finds the same faces
    probs, crops48, tol = probs_of(py_boxes)
    for face, py, crop, p, crop48 in zip(result["faces"], faces, result["crops"], probs, crops48):
        assert face["emotion"] == py["emotion"] and face["emotion"] in meta["classes"]  # same top-1
        np.testing.assert_array_equal(np.asarray(crop, np.uint8).reshape(crop48.shape), crop48)  # same bytes
        assert np.abs(np.asarray(face["probs"]) - p).max() <= tol, (face["probs"], p.tolist(), tol)
        assert face["confidence"] == pytest.approx(p.max(), abs=tol)
        for top in py["top"]:  # vitedge.infer's own numbers (rounded to 4 decimals)
            assert abs(face["probs"][meta["classes"].index(top["emotion"])] - top["p"]) <= tol


def test_still_image_gives_what_python_gives(page, server, photo_host, photos):
    # a photo from another origin (CORS), on two WebAssembly threads (the default on 2 cores is one)
    page.goto(f"{server}/?image={photo_host}/astronaut.png&threads=2&backend=wasm")
    result = wait_frame(page)
    assert result["mode"] == "image" and len(result["faces"]) == 1
    assert_matches_python(result, photos / "astronaut.png")
    stats = result["stats"]
    assert stats["backend"] == "wasm" and stats["isolated"] == "true" and stats["simd"] == "true"
    assert stats["threads"] == "2" and float(stats["modelMs"]) > 0 and float(stats["detectMs"]) > 0
    print(f"\nin-browser latency (headless Chromium, {stats['backend']}, {stats['threads']} threads): "
          f"model {float(stats['modelMs']):.2f} ms per face (median of 30), detection {float(stats['detectMs']):.0f} ms "
          "(512x512)")
    shot = os.environ.get("VITEDGE_WEB_SCREENSHOT")
    if shot:
        import io

        png = Image.open(io.BytesIO(page.screenshot()))
        png.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(shot, optimize=True)


def test_photos_chosen_in_the_page_match_opencv_and_python(page, server, photos):
    """Two faces at two sizes, and a photo above infer's 1280 px detection size (downscaled first)."""
    page.goto(f"{server}/?mode=image")
    wait_ready(page)
    for n, name in enumerate(["two-faces.png", "large.png"], start=1):
        page.set_input_files("#file", str(photos / name))
        result = wait_frame(page, n)
        assert result["faces"], name
        assert_matches_python(result, photos / name)


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
    cascade = infer._cascade()
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
    }""", {"cases": cases, "crops": crops, "cascadeUrl": config["detector"]["cascade"],
           "vFirst": config["preprocess"]["pil_vertical_first"]})
    for case in cases:
        res = got[case["name"]]
        assert res["eq"] and res["linear"] and res["area"], (case["name"], res)
        assert res["raw"] == case["raw"] and len(case["raw"]) > 3, case["name"]  # every window OpenCV accepts
    assert got["crops"] == [True] * len(crops)


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
    assert float(stats["fps"]) > 0 and float(stats["modelMs"]) > 0
    print(f"\nlive: {float(stats['fps']):.1f} frames/s, model {float(stats['modelMs']):.2f} ms per face, "
          f"detection {float(stats['detectMs']):.0f} ms (640x480), {time.time() - t0:.0f} s to 3 frames")
