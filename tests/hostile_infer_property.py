"""Run by tests/test_hostile_inputs.py in a subprocess under an address-space limit (RLIMIT_AS):
Hypothesis throws generated meta.json documents and image bytes at `python -m vitedge.infer`
(in this process, `vitedge.infer.main`) and every run must end with an exit code in {0, 1, 2, 3},
one `error:` line per problem and no traceback. Exceeding the memory limit fails the run.

    python tests/hostile_infer_property.py ARTEFACT_DIR EXAMPLES
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vitedge import infer

SOURCE = Path(sys.argv[1])
BASE = json.loads((SOURCE / "meta.json").read_text())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
fields = st.sampled_from(["format", "precision", "file", "preprocess", "classes", "input", "output", "config",
                          "size_bytes", "model_name", "bs1_threads", "ort_session", "quantization"])
sub_fields = st.sampled_from([("preprocess", "img_size"), ("preprocess", "std"), ("preprocess", "mean"),
                              ("preprocess", "resize"), ("input", "shape"), ("input", "max_batch"),
                              ("output", "shape"), ("bs1_threads", "best")])
hostile_values = st.sampled_from([0, -1, 100000, 1e308, float("nan"), "48", None, [], {}, "../meta.json",
                                  "/etc/passwd", "model.onnx\0", ["a"], 2**63])


@st.composite
def documents(draw):
    kind = draw(st.integers(0, 5))
    meta = json.loads(json.dumps(BASE))
    if kind == 0:
        meta[draw(fields)] = draw(json_values)
    elif kind == 1:
        key, sub = draw(sub_fields)
        if isinstance(meta.get(key), dict):
            meta[key][sub] = draw(hostile_values | json_values)
    elif kind == 2:
        meta.pop(draw(fields), None)
    elif kind == 3:
        meta["classes"] = draw(st.lists(st.text(max_size=5), max_size=9))
    elif kind == 4:
        return draw(json_values)
    else:
        return "[" * draw(st.integers(30, 100_000)) + "]" * draw(st.integers(0, 3))  # deep nesting, raw text
    return meta


def png(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\0" + b"\x80" * width
    data = zlib.compress(row * height) if width * height <= 1 << 16 else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


images = st.one_of(st.binary(max_size=200), st.builds(png, st.integers(1, 200), st.integers(1, 200)),
                   st.builds(png, st.integers(1, 1 << 20), st.integers(1, 1 << 20)))


@settings(max_examples=int(sys.argv[2]), deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(doc=documents(), image=images)
def property_infer_survives(doc, image):
    with tempfile.TemporaryDirectory() as tmp:
        art = Path(tmp) / "art"
        shutil.copytree(SOURCE, art)
        (art / "meta.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
        (Path(tmp) / "face.png").write_bytes(image)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = infer.main(["--no-detect", "--json", "--model", str(art), str(Path(tmp) / "face.png")])
            except SystemExit as exc:  # argparse
                code = exc.code
        text = err.getvalue()
        assert code in (0, 1, 2, 3), (code, text)
        assert "Traceback" not in text, text
        assert all(line.startswith(("error: ", "warning: ")) or "no face found" in line
                   for line in text.splitlines()), text
        if code == 3:
            assert len(text.strip().splitlines()) == 1, text


if __name__ == "__main__":
    property_infer_survives()
    print("ok")
