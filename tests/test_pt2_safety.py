"""A torch program artefact (.pt2) whose loading would unpickle is refused before torch.export.load:
the payload does not run, and `infer` says so in one line with exit 3."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitedge import artefact, pt2, runtimes
from vitedge.checkpoints import load_model, save_model
from vitedge.data import CLASSES
from vitedge.export import common
from vitedge.model import create_model
from vitedge.preprocess import Preprocess

REPO = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pt2")
    torch.manual_seed(0)
    save_model(tmp / "m.pt", create_model("vit-nano-48", depth=1), Preprocess(), list(CLASSES))
    model, info = load_model(tmp / "m.pt")
    art = tmp / "student" / "torch-fp32"
    art.mkdir(parents=True)
    torch.export.save(common.export_program(model, max_batch=4), str(art / "model.pt2"))
    artefact.write_meta(art, "torch", "fp32", "model.pt2", info, 0.0)
    return art


def _rewrite(src: Path, dest: Path, change) -> None:
    """Copy the zip `src` to `dest`, passing each (inner name, bytes) through `change` (-> list of entries)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            for name, data in change(info.filename, zin.read(info)):
                zout.writestr(name, data)


def _evil(program: Path, tmp_path: Path, how: str, marker: Path) -> Path:
    art = tmp_path / "evil"
    art.mkdir()
    (art / "meta.json").write_text((program / "meta.json").read_text())
    payload = pickle.dumps(Payload(marker))

    def change(name: str, data: bytes):
        if how == "pickled-weight" and name.endswith("_weights_config.json"):
            config = json.loads(data)
            first = next(iter(config["config"]))
            config["config"][first]["use_pickle"] = True
            return [(name, json.dumps(config).encode())]
        if how == "pickled-weight" and name.endswith("data/weights/weight_0"):
            return [(name, payload)]
        if how == "opaque-constant" and name.endswith("_constants_config.json"):
            config = {"config": {"c": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                       "tensor_meta": None}}}
            root = name.split("/", 1)[0]
            return [(name, json.dumps(config).encode()), (f"{root}/data/constants/opaque_obj_0", payload)]
        if how == "sample-inputs" and "data/sample_inputs/" in name:
            return [(name, payload)]
        return [(name, data)]

    _rewrite(program / "model.pt2", art / "model.pt2", change)
    return art


def test_the_program_itself_loads_and_runs(program):
    pt2.check_archive(program / "model.pt2")
    rt = runtimes.load(program)
    assert rt.name == "torch" and rt.predict(np.zeros((2, 1, 48, 48), np.float32)).shape == (2, 7)


def test_the_payload_is_live_without_the_check(program, tmp_path):
    """The test's payload is real: torch.export.load runs it (so the next test means something)."""
    marker = tmp_path / "ran"
    art = _evil(program, tmp_path, "pickled-weight", marker)
    try:
        torch.export.load(str(art / "model.pt2"))
    except Exception:  # noqa: BLE001 - what it loads is not a tensor; the payload ran before that
        pass
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("how", ["pickled-weight", "opaque-constant", "sample-inputs"])
def test_pickled_content_is_refused_before_loading(program, tmp_path, how):
    marker = tmp_path / "ran"
    art = _evil(program, tmp_path, how, marker)
    with pytest.raises(pt2.UnsafeProgram, match="refused"):
        runtimes.load(art)
    assert not marker.exists()


def test_infer_refuses_it_in_one_line_with_exit_3(program, tmp_path):
    marker = tmp_path / "ran"
    art = _evil(program, tmp_path, "pickled-weight", marker)
    face = tmp_path / "face.png"
    Image.new("L", (48, 48), 128).save(face)
    for runtime in ("torch", "auto"):
        run = subprocess.run([sys.executable, "-m", "vitedge.infer", "--no-detect", "--runtime", runtime,
                              "--model", str(art), str(face)], capture_output=True, text=True, timeout=300, cwd=REPO)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 3 and len(lines) == 1 and "refused" in lines[0], run.stderr
        assert not marker.exists()
