"""Refuse a torch.export program archive (.pt2) that would run code when loaded.

`torch.export.load` is not a data-only reader: it unpickles (with `weights_only=False`) every
weight or constant its payload config marks `use_pickle` (tensor subclasses), every custom
object (`custom_obj_*`, TorchScript's pickler) and opaque constant (`opaque_obj_*`, plain
`pickle.loads`), the legacy whole-state-dict files (`data/weights/<model>.pt`), and its sample
inputs (it tries `weights_only=True` first, then falls back to `weights_only=False`). A `.pt2`
is a zip anyone can write, so any of those entries is a way to run code as the user who loads it.

`check_archive` reads the zip itself (no torch unpickling) and accepts only what vitedge's own
programs hold: plain raw tensor payloads, the JSON program and configs, and sample inputs that
load with `weights_only=True`. Anything else is refused with `UnsafeProgram`, before
`torch.export.load` ever sees the file.
"""
from __future__ import annotations

import io
import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from vitedge.artefact import ArtefactError

# what a plain program archive holds, below its one root folder (torch 2.x `package_pt2` layout)
_ALLOWED = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/[^/]+\.json"
    r"|data/weights/[^/]+_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/[^/]+_constants_config\.json|data/constants/tensor_\d+"
    r"|data/sample_inputs/[^/]+\.pt"
    r"|extra/[^/]+)"
)
MAX_CONFIG_BYTES = 64 << 20  # a payload config is a few KB per tensor: bounds the JSON parse
MAX_SAMPLE_INPUT_BYTES = 64 << 20


class UnsafeProgram(ArtefactError):
    """A .pt2 holds something whose loading would run code (pickled weights, custom objects ...)."""


def check_archive(path: str | Path) -> None:
    """Raise UnsafeProgram unless `path` is a .pt2 whose loading unpickles nothing but plain data."""
    path = Path(path)
    why = f"{path}: refused: a torch program whose loading could run code"
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtefactError(f"{path}: not a torch.export program archive ({exc})") from exc
    with zf:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1 or any("/" not in n for n in names):
            raise ArtefactError(f"{path}: not a torch.export program archive (expected one root folder)")
        for name in names:
            inner = name.split("/", 1)[1]
            if not _ALLOWED.fullmatch(inner):
                raise UnsafeProgram(f"{why} (it holds '{inner}', which torch.export.load would unpickle or "
                                    "execute; vitedge programs hold only raw tensors and JSON)")
            if inner.endswith("_config.json"):
                _check_payload_config(zf, name, inner, why)
            elif inner.startswith("data/sample_inputs/"):
                _check_sample_inputs(zf, name, inner, why)


def _check_payload_config(zf: zipfile.ZipFile, name: str, inner: str, why: str) -> None:
    """Every entry of a weights/constants config must be a raw tensor (use_pickle false)."""
    if zf.getinfo(name).file_size > MAX_CONFIG_BYTES:
        raise UnsafeProgram(f"{why} ({inner} is {zf.getinfo(name).file_size:,} bytes)")
    try:
        config = json.loads(zf.read(name))
    except (ValueError, RecursionError) as exc:
        raise UnsafeProgram(f"{why} ({inner} is not valid JSON: {exc})") from None
    entries: Any = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise UnsafeProgram(f"{why} ({inner} is not a payload config)")
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise UnsafeProgram(f"{why} ({inner}: '{fqn}' is a pickled object, not a raw tensor)")
        path_name = meta.get("path_name")
        if not isinstance(path_name, str) or not re.fullmatch(r"(weight|tensor)_\d+", path_name):
            raise UnsafeProgram(f"{why} ({inner}: '{fqn}' is stored as {path_name!r}, not a raw tensor file)")


def _check_sample_inputs(zf: zipfile.ZipFile, name: str, inner: str, why: str) -> None:
    """torch falls back to weights_only=False when weights_only=True fails: so it must not fail."""
    if zf.getinfo(name).file_size > MAX_SAMPLE_INPUT_BYTES:
        raise UnsafeProgram(f"{why} ({inner} is {zf.getinfo(name).file_size:,} bytes)")
    try:
        torch.load(io.BytesIO(zf.read(name)), weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, zipfile.BadZipFile, TypeError,
            AttributeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeProgram(f"{why} ({inner} holds more than plain tensors: {first[:200]})") from None
