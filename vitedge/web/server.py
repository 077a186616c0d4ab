"""The web demo's server: the page, onnxruntime-web, the face detector and one ONNX artefact.

Everything comes from this package and the libraries it already depends on, so the page works
offline: the page and the vendored onnxruntime-web are in `vitedge/web/static/`, the BlazeFace
detector is the ONNX file `vitedge.infer` runs (`vitedge/assets/detector/`), the Haar cascade
(`?detector=haar`) is read from the installed OpenCV wheel (`cv2.data`) and sent as JSON, and
the model is the artefact given (default: the one shipped in `vitedge/assets/model/`, found as
`vitedge.infer` finds it).

Routes:
    /                         the page (static/index.html); /<file> any file of static/
    /config.json              what the page needs to mirror vitedge.infer (margin, levelling, both
                              detectors' settings, model URLs, which onnxruntime-web builds are here)
    /model/meta.json          the artefact's meta.json (preprocessing, classes, input/output names)
    /model/<file>             the artefact's model file
    /detector/<name>.onnx     the BlazeFace model (vitedge.faces.blazeface.model_path())
    /detector/<name>.json     the Haar cascade as JSON

Every response carries the cross-origin isolation headers (COOP same-origin, COEP
require-corp) that WebAssembly threads (SharedArrayBuffer) need, and `nosniff`.

Hostile clients: each connection has a socket timeout and at most MAX_CONNECTIONS are served at
once (more are answered 503 and closed), so idle half-open connections cannot hold the server; a
path that cannot name a file (a NUL byte, bad percent-encoding) is a 400. The served meta.json
holds only what the page reads (no build machine, no absolute paths). This module does not import
torch (nor `vitedge.infer`, which does): what the page mirrors of `infer` is in `vitedge.defaults`.
"""
from __future__ import annotations

import functools
import http.server
import ipaddress
import json
import posixpath
import sys
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import PIL

from vitedge import defaults
from vitedge.artefact import ArtefactError, read_meta
from vitedge.faces import align, blazeface, draw, haar

STATIC = Path(__file__).resolve().parent / "static"
ORT_DIR = STATIC / "vendor" / "onnxruntime-web"
ORT_WASM_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
ORT_WEBGPU_FILES = ("ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm")
CASCADE_NAME = haar.CASCADE_NAME
DETECTOR_ROUTE = f"/detector/{blazeface.model_path().name}"
# the meta.json fields the page reads, and those that describe the model: the rest (the build machine's
# hostname, absolute source paths, library versions) is nobody's business on the network
PAGE_META_KEYS = ("schema", "format", "precision", "file", "model_name", "config", "preprocess", "classes",
                  "input", "output", "size_bytes")
REQUEST_TIMEOUT_S = 10  # a connection idle this long is closed (slow or half-open clients)
MAX_CONNECTIONS = 32  # served at once; the page opens a handful
ONNX_PRECISION_ORDER = ("int8", "fp32", "fp16")  # in a folder of artefacts: the smallest that runs everywhere

ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


class ModelError(Exception):
    """The model given cannot be served: the message is the whole explanation (one line)."""


# --------------------------------------------------------------------------- the model
def resolve_model(path: str | Path | None) -> tuple[Path, dict[str, Any]]:
    """(artefact folder, meta) of the ONNX artefact to serve, or ModelError.

    `path`: an ONNX artefact folder, its model.onnx or meta.json, or a model folder holding
    artefacts (the ONNX one is used; int8 first); None: the model shipped with vitedge."""
    if path is None:
        shipped = defaults.packaged_model()
        if shipped is None:
            raise ModelError("no model given and none is shipped with this vitedge install: pass --model "
                             "ARTEFACT (an ONNX artefact folder, e.g. results/default/artefacts/student/onnx-int8)")
        path = shipped
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: not found")
    if path.is_dir() and not (path / "meta.json").is_file():
        metas = sorted(path.glob("*/meta.json"))
        if not metas:
            raise ModelError(f"{path}: not an ONNX artefact (no meta.json in it or its subfolders; export one "
                             "with `python -m vitedge.export --format onnx`)")
        options = []
        for meta_path in metas:
            try:
                art, meta = _read_artefact(meta_path.parent)
            except ModelError:
                continue
            if meta["format"] == "onnx":
                options.append((art, meta))
        if not options:
            found = ", ".join(m.parent.name for m in metas)
            raise ModelError(f"{path}: holds no ONNX artefact (found {found}); the page runs ONNX models only")
        rank = {p: i for i, p in enumerate(ONNX_PRECISION_ORDER)}
        return min(options, key=lambda am: rank.get(am[1]["precision"], 99))
    art, meta = _read_artefact(path)
    if meta["format"] != "onnx":
        raise ModelError(f"{path}: not an ONNX artefact (it is a {meta['format']} artefact); the page runs "
                         "ONNX models only: pass an onnx-* artefact folder")
    return art, meta


def _read_artefact(path: Path) -> tuple[Path, dict[str, Any]]:
    """An artefact folder (or its model file / meta.json) -> (folder, meta), checked by the artefact
    contract (`vitedge.artefact.read_meta`: types, bounds, the model file inside the folder); each
    failure is a ModelError saying what to pass instead."""
    art = path.parent if path.is_file() else path
    if not (art / "meta.json").is_file():
        kind = "a file" if path.is_file() else "a folder"
        raise ModelError(f"{path}: not an ONNX artefact ({kind} without a meta.json beside it; export one with "
                         "`python -m vitedge.export --format onnx`)")
    try:
        meta = read_meta(art)
    except ArtefactError as exc:
        raise ModelError(f"{path}: not a usable artefact: {exc}") from None
    if path.is_file() and path.name not in ("meta.json", meta["file"]):
        raise ModelError(f"{path}: not the artefact's model file ({meta['file']})")
    if meta["format"] == "onnx" and not (art / meta["file"]).is_file():
        raise ModelError(f"{path}: the model file '{meta['file']}' named in meta.json is not a file")
    return art, meta


def page_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """meta.json as served: the fields the page needs, without the build machine or its paths."""
    return {k: meta[k] for k in PAGE_META_KEYS if k in meta}


# --------------------------------------------------------------------------- the face detector
def cascade_path() -> Path:
    """OpenCV's frontal-face Haar cascade, the file vitedge.infer loads."""
    return haar.cascade_path()


def cascade_json(path: str | Path | None = None) -> dict[str, Any]:
    """An OpenCV (new format) Haar cascade XML -> the JSON the page's detector reads (static/haar.mjs)."""
    root = ET.parse(path or cascade_path()).getroot()
    cascade = root.find("cascade")
    if cascade is None or (cascade.findtext("featureType") or "").strip() != "HAAR":
        raise ValueError(f"{path}: not an OpenCV HAAR cascade in the new format")

    def numbers(text: str | None) -> list[float]:
        return [float(t) for t in (text or "").split()]

    features = []
    for feat in cascade.find("features") or []:
        if (feat.findtext("tilted") or "0").strip() not in ("0", ""):
            raise ValueError("tilted Haar features are not supported by the page's detector")
        flat: list[float] = []
        for rect in feat.find("rects") or []:
            flat.extend(numbers(rect.text))
        features.append([int(v) if i % 5 != 4 else v for i, v in enumerate(flat)])
    stages = []
    for stage in cascade.find("stages") or []:
        weak = []
        for tree in stage.find("weakClassifiers") or []:
            nodes = numbers(tree.findtext("internalNodes"))
            nodes = [int(v) if i % 4 != 3 else v for i, v in enumerate(nodes)]
            weak.append([nodes, numbers(tree.findtext("leafValues"))])
        stages.append({"threshold": float(stage.findtext("stageThreshold") or "nan"), "weak": weak})
    return {"source": Path(path or cascade_path()).name, "width": int(cascade.findtext("width") or 0),
            "height": int(cascade.findtext("height") or 0), "features": features, "stages": stages}


# --------------------------------------------------------------------------- what the page is told
def page_config(meta: dict[str, Any], margin: float | None = None, min_face: int | None = None) -> dict[str, Any]:
    """vitedge.infer's settings, read from vitedge.defaults (which infer reads) and vitedge.faces so the two cannot
    drift apart. `min_face` (--min-face) replaces both detectors' defaults, for photos and the camera."""
    bf = blazeface
    return {
        "model": {"meta": "model/meta.json", "file": f"model/{meta['file']}", "name": meta.get("model_name", ""),
                  "format": meta["format"], "precision": meta["precision"],
                  # dynamic int8 is quantised over each call, so vitedge.infer runs it one face per call: the
                  # rule of vitedge.runtimes.onnx_rt.dynamic_activations, not imported (that imports torch)
                  "one_face_per_call": ((meta.get("quantization") or {}).get("method") or {}).get("kind") == "dynamic"},
        "detector": {
            "name": "blazeface",  # the page's default, as vitedge.infer's; ?detector=haar for the cascade
            "blazeface": {"model": DETECTOR_ROUTE[1:], "min_face": min_face or defaults.MIN_FACE["blazeface"],
                          "min_face_video": min_face or max(defaults.MIN_FACE["blazeface"], defaults.MIN_FACE_VIDEO),
                          "input": bf.INPUT, "det_min": bf.DET_MIN, "tile_max": bf.TILE_MAX,
                          "level_ratio": bf.LEVEL_RATIO, "max_level_side": bf.MAX_LEVEL_SIDE,
                          "score_min": bf.SCORE_MIN, "nms_iou": bf.NMS_IOU},
            "haar": {"cascade": f"detector/{CASCADE_NAME}.json", "scale_factor": haar.SCALE_FACTOR,
                     "min_neighbors": haar.MIN_NEIGHBORS, "min_face": min_face or defaults.MIN_FACE["haar"],
                     "min_face_video": min_face or max(defaults.MIN_FACE["haar"], defaults.MIN_FACE_VIDEO),
                     "max_side": haar.MAX_SIDE},
        },
        "margin": align.MARGIN if margin is None else margin,
        "level_above_deg": align.LEVEL_ABOVE_DEG,
        "colours": {**draw.COLOURS, "": draw.DEFAULT_COLOUR},  # vitedge.faces.draw's, "" for other classes
        "top_k": defaults.TOP_K,
        # Pillow >= 13 resizes vertically first when the height shrinks much more than the width
        # (static/imageops.mjs: resizePIL); the rounding differs, so the page follows this install
        "preprocess": {"pillow": PIL.__version__, "pil_vertical_first": int(PIL.__version__.split(".")[0]) >= 13},
        "ort": {"path": "vendor/onnxruntime-web/",
                "wasm": all((ORT_DIR / f).is_file() for f in ORT_WASM_FILES),
                "webgpu": all((ORT_DIR / f).is_file() for f in ORT_WEBGPU_FILES)},
    }


def check_vendored() -> None:
    missing = [f for f in ORT_WASM_FILES if not (ORT_DIR / f).is_file()]
    if missing:
        raise ModelError(f"onnxruntime-web is missing from {ORT_DIR} ({', '.join(missing)}): run vitedge/web/vendor.sh")


# --------------------------------------------------------------------------- the server
class BadPath(ValueError):
    """A request path that cannot name a file: answered 400."""


class Handler(http.server.SimpleHTTPRequestHandler):
    """Static files from STATIC, plus the model, the detectors and the config; isolation headers on all."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
                      ".onnx": "application/octet-stream", ".json": "application/json", ".css": "text/css",
                      ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml"}
    timeout = REQUEST_TIMEOUT_S  # socketserver sets it on the connection: a silent client is dropped

    def __init__(self, *args, app: "App", **kwargs):
        self.app = app
        super().__init__(*args, directory=str(STATIC), **kwargs)

    def end_headers(self) -> None:
        for k, v in ISOLATION_HEADERS.items():
            self.send_header(k, v)
        self.send_header("Cache-Control", "no-cache")  # revalidate (Last-Modified): a new model shows at once
        super().end_headers()

    def _route(self) -> str:
        """The request's path, decoded and normalised; BadPath when it cannot name a file."""
        try:
            raw = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path, errors="strict")
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadPath(f"undecodable path ({exc})") from None
        if "\0" in raw or "\\" in raw or any(ord(c) < 32 for c in raw):
            raise BadPath("control character or backslash in the path")
        return posixpath.normpath(raw)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        try:
            route = self._route()
        except BadPath as exc:
            self.send_error(400, "Bad request", str(exc))
            return
        generated = self.app.generated(route)
        if generated is not None:
            data, ctype = generated
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)
            return
        f = self.send_head()
        if f:
            try:
                if body:
                    self.copyfile(f, self.wfile)
            finally:
                f.close()

    def translate_path(self, path: str) -> str:
        mapped = self.app.files.get(self._route())  # _serve has checked the route
        return str(mapped) if mapped is not None else super().translate_path(path)

    def list_directory(self, path):  # no directory listings
        self.send_error(404, "Not found")
        return None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.app.verbose:
            super().log_message(format, *args)


class App:
    """What one server serves: the artefact, the config and the cascade (made once, on first use)."""

    def __init__(self, art: Path, meta: dict[str, Any], margin: float | None = None, min_face: int | None = None,
                 verbose: bool = False):
        self.art, self.meta, self.verbose = art, meta, verbose
        self.config = page_config(meta, margin, min_face)
        # the model file and the detector (meta.json is served stripped, from `generated`); read_meta
        # confined the model file to `art`
        self.files = {f"/model/{meta['file']}": art / meta["file"], DETECTOR_ROUTE: blazeface.model_path()}
        self.page_meta = json.dumps(page_meta(meta)).encode()
        self._lock = threading.Lock()
        self._cascade: bytes | None = None

    def generated(self, route: str) -> tuple[bytes, str] | None:
        if route == "/config.json":
            return json.dumps(self.config).encode(), "application/json"
        if route == "/model/meta.json":
            return self.page_meta, "application/json"
        if route == f"/detector/{CASCADE_NAME}.json":
            with self._lock:
                if self._cascade is None:
                    self._cascade = json.dumps(cascade_json(), separators=(",", ":")).encode()
            return self._cascade, "application/json"
        return None


class Server(http.server.ThreadingHTTPServer):
    """One thread per connection, at most MAX_CONNECTIONS at once: a flood of idle connections gets
    503s instead of a thread each (and each held one times out after REQUEST_TIMEOUT_S)."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, *args: Any, max_connections: int = MAX_CONNECTIONS, **kwargs: Any):
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                request.settimeout(1)
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
                                b"Connection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, TimeoutError)):
            return  # the browser dropped a request (a reload, a cancelled fetch), or went silent: nothing to report
        super().handle_error(request, client_address)


def make_server(app: App, host: str = "127.0.0.1", port: int = 8000,
                max_connections: int = MAX_CONNECTIONS) -> Server:
    return Server((host, port), functools.partial(Handler, app=app), max_connections=max_connections)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def page_url(host: str, port: int) -> str:
    """The URL to open. A wildcard bind (0.0.0.0, ::) is no address to browse to, and browsers treat only
    localhost (or HTTPS) as a secure context, which the camera and WebAssembly threads need: this machine's
    loopback it is."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1" if host != "::" else "::1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
