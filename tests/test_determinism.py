"""Same seed, same weights: two runs agree bit for bit, and so does a run killed mid-epoch and resumed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vitedge.data import make_synthetic, save_splits
from vitedge.torch_io import load_torch

REPO = Path(__file__).resolve().parents[1]
MODEL = json.dumps({"preset": "hybrid-micro-48", "overrides": {"depth": 1, "embed_dim": 64, "distilled": False}})
TRAIN = {"epochs": 3, "batch_size": 16, "lr": 0.004, "augment": "strong", "warmup_epochs": 0.5, "threads": 1}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("det-data")
    save_splits(d, make_synthetic(per_class=48, seed=3), {"kind": "synthetic"})
    return d


def _cmd(data_dir: Path, out: Path, train: dict, resume: bool = False) -> list[str]:
    return [sys.executable, "-m", "vitedge.finetune", "--data", str(data_dir), "--out", str(out), "--model-json", MODEL,
            "--train-json", json.dumps(train), "--seed", "7", *(["--resume"] if resume else [])]


def _run(data_dir: Path, out: Path, train: dict = TRAIN, resume: bool = False) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_cmd(data_dir, out, train, resume), check=True, cwd=REPO, env=env, capture_output=True, timeout=300)


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_torch(out.with_name(out.name + ".work") / "state.pt")["model"]


def _assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def test_two_runs_with_one_seed_give_identical_weights(tmp_path, data_dir):
    _run(data_dir, tmp_path / "a.pt")
    _run(data_dir, tmp_path / "b.pt")
    _assert_bitwise_equal(_final_weights(tmp_path / "a.pt"), _final_weights(tmp_path / "b.pt"))
    # and the kept best checkpoints too
    _assert_bitwise_equal(load_torch(tmp_path / "a.pt")["state_dict"], load_torch(tmp_path / "b.pt")["state_dict"])
    # a different seed must give different weights, or the comparison above proves nothing
    subprocess.run(_cmd(data_dir, tmp_path / "c.pt", TRAIN)[:-2] + ["--seed", "8"], check=True, cwd=REPO,
                   capture_output=True, timeout=300)
    c = _final_weights(tmp_path / "c.pt")
    assert any(not torch.equal(v, c[k]) for k, v in _final_weights(tmp_path / "a.pt").items())


def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run(tmp_path, data_dir):
    train = {**TRAIN, "epochs": 4}
    _run(data_dir, tmp_path / "whole.pt", train)

    out = tmp_path / "killed.pt"
    state = out.with_name(out.name + ".work") / "state.pt"
    log = out.with_name(out.name + ".work") / "metrics.jsonl"
    proc = subprocess.Popen(_cmd(data_dir, out, train), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while not (log.is_file() and log.read_text().count("\n") >= 1) and time.monotonic() < deadline:
            time.sleep(0.02)
        epoch_s = json.loads(log.read_text().splitlines()[0])["epoch_s"]
        time.sleep(epoch_s / 2)  # half-way through epoch 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-run"
    epochs_done = load_torch(state)["epoch"]
    assert 1 <= epochs_done < 4, f"killed after {epochs_done} epochs: not mid-run"
    assert not out.exists(), "a killed run must not leave a final checkpoint"

    _run(data_dir, out, train, resume=True)
    _assert_bitwise_equal(_final_weights(tmp_path / "whole.pt"), _final_weights(out))
    _assert_bitwise_equal(load_torch(tmp_path / "whole.pt")["state_dict"], load_torch(out)["state_dict"])
    history = [json.loads(line) for line in log.read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
