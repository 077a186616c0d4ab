"""Shared fixtures. Tests run on CPU with few threads: CI has 2 cores."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
FER_ZIP = (REPO / ".." / "shared" / "datasets" / "fer2013" / "fer2013.zip").resolve()


@pytest.fixture(scope="session")
def fer_zip() -> Path:
    if not FER_ZIP.is_file():
        pytest.skip(f"FER-2013 not found at {FER_ZIP} (see ../shared/datasets/README.md)")
    return FER_ZIP


@pytest.fixture(scope="session")
def synthetic_splits():
    from vitedge.data import make_synthetic

    return make_synthetic(per_class=60, seed=0)


@pytest.fixture(scope="module")
def one_thread():
    """Train and time on one thread: two OpenMP threads on a busy 2-core CI box stall each other
    (measured 5-100x slower steps), one thread does not. Use with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A one-block vit-micro-48 checkpoint with random weights: enough for commands that need a model."""
    from vitedge.checkpoints import save_model
    from vitedge.data import CLASSES
    from vitedge.model import create_model
    from vitedge.preprocess import Preprocess

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(path, create_model("vit-micro-48", depth=1), Preprocess(), list(CLASSES))
    return path
