"""Torch files, the safe way: saved atomically (`vitedge.io.atomic_path`), loaded with
`weights_only=True` only: checkpoints are data, never code.

Apart from `vitedge.io` so that reading JSON and writing files does not import torch (the web
server reads artefacts and never needs it).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from vitedge.io import atomic_path


def save_torch(obj: Any, dest: str | os.PathLike) -> None:
    with atomic_path(dest) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | os.PathLike, map_location: str = "cpu") -> Any:
    """Load a vitedge checkpoint. Always `weights_only=True`: checkpoints are data, never code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, zip errors ...
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
