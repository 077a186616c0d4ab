"""The web server against hostile clients and artefacts: timeouts, a bounded pool, 400s, nosniff, a
stripped meta.json, the artefact's file confined, a warning for non-loopback hosts, and no torch."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from vitedge import defaults
from vitedge.web import server as web

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def running(monkeypatch):
    monkeypatch.setattr(web.Handler, "timeout", 1)
    art, meta = web.resolve_model(None)
    srv = web.make_server(web.App(art, meta), "127.0.0.1", 0, max_connections=4)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _raw(srv, request: bytes) -> bytes:
    with socket.create_connection(srv.server_address, timeout=5) as s:
        s.sendall(request)
        return s.recv(4096)


def test_malformed_paths_answer_400(running):
    srv, _ = running
    for path in (b"/%00", b"/app.mjs%00.png", b"/%ff%fe", b"/..%5c..%5cetc"):
        assert _raw(srv, b"GET " + path + b" HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 400"), path


def test_headers_and_a_stripped_meta_json(running):
    _, url = running
    with urllib.request.urlopen(url + "/model/meta.json") as r:
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        served = json.loads(r.read())
    assert set(served) <= set(web.PAGE_META_KEYS) and {"classes", "preprocess", "input", "file"} <= set(served)
    assert "machine" not in served and "source_checkpoint" not in served


def test_idle_connections_time_out_and_the_pool_is_bounded(running):
    srv, url = running
    idle = [socket.create_connection(srv.server_address) for _ in range(4)]  # half-open: never send a request
    time.sleep(0.3)
    extra = _raw(srv, b"GET / HTTP/1.0\r\n\r\n")
    assert extra.startswith(b"HTTP/1.0 503")  # the pool is full: refused at once, no thread for it
    time.sleep(1.5)  # the idle ones time out (Handler.timeout) and free their slots
    with urllib.request.urlopen(url + "/config.json", timeout=5) as r:
        assert r.status == 200
    for s in idle:
        s.close()


def test_artefact_file_outside_its_folder_is_refused(tmp_path):
    art = Path(shutil.copytree(web.resolve_model(None)[0], tmp_path / "onnx-int8"))
    meta = json.loads((art / "meta.json").read_text())
    for file in ("../../etc/passwd", "/etc/passwd"):
        (art / "meta.json").write_text(json.dumps({**meta, "file": file}))
        with pytest.raises(web.ModelError, match="plain file name"):
            web.resolve_model(art)
    (art / "meta.json").write_text(json.dumps(meta))
    (art / "model.onnx").unlink()
    os.symlink("/etc/hostname", art / "model.onnx")
    with pytest.raises(web.ModelError, match="outside the artefact folder"):
        web.resolve_model(art)


def test_serving_imports_no_torch_and_warns_off_loopback():
    code = ("import sys, vitedge.web.server as w; art, meta = w.resolve_model(None); w.App(art, meta); "
            "print('torch' in sys.modules, 'vitedge.infer' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.stdout.split() == ["False", "False"], run.stderr
    proc = subprocess.Popen([sys.executable, "-m", "vitedge.web", "--host", "0.0.0.0", "--port", "0"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line and "0.0.0.0" not in line.split(" at ")[1]
    finally:
        proc.terminate()
        err = proc.communicate(timeout=30)[1]
    assert err.startswith("warning: serving on 0.0.0.0") and "secure context" in err
    assert web.page_url("::", 8000) == "http://[::1]:8000/" and web.is_loopback("127.0.0.1")
    assert not web.is_loopback("0.0.0.0")


def test_infer_uses_the_settings_the_page_mirrors():
    """The page reads vitedge.defaults and vitedge.faces (the server imports no torch); infer's
    command line defaults to the very same values."""
    from vitedge import infer
    from vitedge.faces import align

    args = infer.parse_args(["x.png"])
    assert (args.min_face, args.margin, args.level_above, args.top_k, args.max_pixels) == (
        defaults.MIN_FACE["blazeface"], align.MARGIN, align.LEVEL_ABOVE_DEG, defaults.TOP_K, defaults.MAX_IMAGE_PIXELS)
    assert infer.parse_args(["--detector", "haar", "x.png"]).min_face == defaults.MIN_FACE["haar"]
    assert infer.parse_args(["clip.mp4"]).min_face == defaults.MIN_FACE_VIDEO
    assert infer.packaged_model() == defaults.packaged_model()
