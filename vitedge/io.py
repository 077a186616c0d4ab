"""Small, shared file helpers: atomic writes, content hashes, safe checkpoint loading.

Every file vitedge produces is written atomically: `atomic_path` hands the writer a temporary
name in the same folder and renames it onto the destination (after an fsync) only when the
writing succeeded; `atomic_write_bytes`, `atomic_write_text`, `write_json` (and
`vitedge.torch_io.save_torch`) are built on it. So an interrupted job never leaves a half-written artefact that a later stage would
trust.

This module imports nothing from vitedge, nor torch (the torch files are `vitedge.torch_io`): everything
else may use it, the web server included, which must not load torch to serve static files.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it onto `dest` only if the block succeeds.

    Use for writers that want a filename (torch.save, onnx.save, coremltools ...).
    `suffix` keeps libraries that sniff the extension happy (e.g. ".onnx", ".mlpackage").
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=(suffix or dest.suffix) + ".tmp", dir=dest.parent)
    os.close(fd)
    os.unlink(tmp)  # writers create it themselves (some create directories, e.g. .mlpackage)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if dest.is_dir() and not tmp_path.is_dir():
            raise IsADirectoryError(dest)
        if tmp_path.is_dir():
            # directories cannot be atomically replaced; swap via a second rename
            if dest.exists():
                old = dest.with_name(f".{dest.name}.old")
                _rmtree(old)
                os.replace(dest, old)
                os.replace(tmp_path, dest)
                _rmtree(old)
            else:
                os.replace(tmp_path, dest)
        else:
            _fsync(tmp_path)
            os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            _rmtree(tmp_path) if tmp_path.is_dir() else tmp_path.unlink()


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _rmtree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def atomic_write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(dest, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hash of a file, or of every file below a directory (e.g. a .mlpackage), in sorted order."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def file_size(path: str | os.PathLike) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
