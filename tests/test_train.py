"""Training engine: losses go down, resume is exact, DDP runs, the stage CLIs chain."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitedge import checkpoints
from vitedge.data import save_splits
from vitedge.model import create_model
from vitedge.preprocess import Preprocess
from vitedge.pretrain import MAE, PretrainConfig, pretrain_mae
from vitedge.engine import SupervisedLoss, TrainConfig, fit, lr_at

PRE = Preprocess()
TINY = dict(preset="vit-micro-48", overrides={"depth": 2})


def _tiny():
    return create_model(TINY["preset"], **TINY["overrides"])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, synthetic_splits):
    d = tmp_path_factory.mktemp("data")
    save_splits(d, synthetic_splits, {"kind": "synthetic"})
    return d


def _batch(splits, n=32):
    x = torch.from_numpy(PRE(splits["train"].images[:n]))
    return x, torch.from_numpy(splits["train"].labels[:n])


def test_lr_schedule_warmup_then_cosine():
    lrs = [lr_at(s, 100, 10, 1.0, 0.01) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.01, abs=1e-3)


def test_supervised_steps_lower_the_loss(synthetic_splits):
    torch.manual_seed(0)
    model, crit = _tiny(), SupervisedLoss()
    x, y = _batch(synthetic_splits)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = crit(x, model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_mae_steps_lower_the_loss_and_mask_75_percent(synthetic_splits):
    torch.manual_seed(0)
    mae = MAE(_tiny(), mask_ratio=0.75, decoder_dim=64, decoder_depth=1)
    x, _ = _batch(synthetic_splits)
    opt = torch.optim.AdamW(mae.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        loss = mae(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    # patchify is the inverse layout of the patch embedding: 64 patches of 6x6 for 48x48, patch 6
    assert mae.patchify(x).shape == (32, 64, 36)


def test_mae_pretraining_runs_and_saves_encoder(tmp_path, synthetic_splits):
    cfg = PretrainConfig(epochs=1, batch_size=32, max_steps_per_epoch=3, decoder_dim=32, decoder_depth=1)
    model = _tiny()
    res = pretrain_mae(model, synthetic_splits, PRE, cfg, tmp_path)
    enc, info = checkpoints.load_model(res["best_path"])
    assert info["meta"]["method"] == "mae"
    torch.testing.assert_close(enc.pos_embed, model.pos_embed.detach().cpu())


class _Interrupt(SupervisedLoss):
    """Cross-entropy that raises KeyboardInterrupt at a given step, like Ctrl-C mid-epoch."""

    def __init__(self, at_step: int):
        super().__init__()
        self.calls, self.at_step = 0, at_step

    def forward(self, images, outputs, labels):
        self.calls += 1
        if self.calls == self.at_step:
            raise KeyboardInterrupt
        return super().forward(images, outputs, labels)


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, synthetic_splits):
    train, val = synthetic_splits["train"], synthetic_splits["val"]
    cfg = TrainConfig(epochs=3, batch_size=32, max_steps_per_epoch=3, augment="strong", class_balance="none")

    torch.manual_seed(0)
    straight = _tiny()
    fit(straight, train, val, PRE, cfg, tmp_path / "a", criterion=SupervisedLoss())

    torch.manual_seed(0)
    interrupted = _tiny()
    with pytest.raises(KeyboardInterrupt):  # dies in the middle of epoch 2
        fit(interrupted, train, val, PRE, cfg, tmp_path / "b", criterion=_Interrupt(at_step=5))
    resumed = _tiny()  # a fresh process would start from a fresh model
    result = fit(resumed, train, val, PRE, cfg, tmp_path / "b", criterion=SupervisedLoss(), resume=True)

    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=f"{k} differs after resume")
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    assert len(result["history"]) == 3


def test_channels_last_trains_the_same_weights_and_saves_a_loadable_checkpoint(tmp_path, synthetic_splits):
    """NHWC is a layout, not a different model: after two steps the CNN computes what the NCHW one does."""
    train, val = synthetic_splits["train"], synthetic_splits["val"]
    runs, hist = {}, {}
    for layout in (False, True):
        cfg = TrainConfig(epochs=1, batch_size=32, max_steps_per_epoch=2, class_balance="none", channels_last=layout)
        torch.manual_seed(0)
        model = create_model("cnn-small-48")
        hist[layout] = fit(model, train, val, PRE, cfg, tmp_path / str(layout), criterion=SupervisedLoss())["history"]
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == layout
        runs[layout] = model
    # Adam turns float noise in near-zero gradients into steps of ~lr, so compare what the nets compute
    x = torch.from_numpy(PRE(val.images[:16]))
    torch.testing.assert_close(runs[True].eval()(x), runs[False].eval()(x), atol=2e-3, rtol=1e-3)
    assert [h["train_loss"] for h in hist[True]] == pytest.approx([h["train_loss"] for h in hist[False]], abs=1e-3)
    reloaded, _ = checkpoints.load_model(tmp_path / "True" / "best.pt")
    torch.testing.assert_close(reloaded(x), runs[True].eval()(x), atol=1e-4, rtol=1e-4)


def test_resume_with_other_options_starts_afresh(tmp_path, synthetic_splits, caplog):
    train, val = synthetic_splits["train"], synthetic_splits["val"]
    cfg = TrainConfig(epochs=1, batch_size=32, max_steps_per_epoch=2)
    fit(_tiny(), train, val, PRE, cfg, tmp_path)
    other = TrainConfig(epochs=1, batch_size=32, max_steps_per_epoch=2, lr=5e-4)
    res = fit(_tiny(), train, val, PRE, other, tmp_path, resume=True)
    assert len(res["history"]) == 1 and "afresh" in caplog.text


def _run(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, **kw)


def test_stage_clis_chain_pretrain_then_finetune(tmp_path, data_dir):
    model = json.dumps(TINY)
    train = json.dumps({"epochs": 1, "batch_size": 32, "max_steps_per_epoch": 2})
    pre = _run([sys.executable, "-m", "vitedge.pretrain", "--data", str(data_dir), "--out", str(tmp_path / "p.pt"),
                "--model-json", model, "--train-json", train])
    assert pre.returncode == 0, pre.stderr
    ft = _run([sys.executable, "-m", "vitedge.finetune", "--data", str(data_dir), "--init", str(tmp_path / "p.pt"),
               "--out", str(tmp_path / "t.pt"), "--model-json", model, "--train-json", train])
    assert ft.returncode == 0, ft.stderr
    summary = json.loads((tmp_path / "t.json").read_text())
    assert 0 <= summary["val"]["top1"] <= 1 and summary["params"] > 0
    checkpoints.load_model(tmp_path / "t.pt")
    # the warm start is on record: which checkpoint, and what its own stage wrote about it
    assert summary["init"]["checkpoint"] == str(tmp_path / "p.pt")
    assert summary["init"]["summary"] == json.loads((tmp_path / "p.json").read_text())


def test_cli_errors_are_one_line(tmp_path):
    r = _run([sys.executable, "-m", "vitedge.finetune", "--data", str(tmp_path), "--out", str(tmp_path / "t.pt")])
    assert r.returncode == 2 and "Traceback" not in r.stderr and "manifest.json" in r.stderr


def test_supervised_pretraining_on_image_folder(tmp_path, synthetic_splits):
    from PIL import Image

    from vitedge.pretrain import pretrain_supervised

    for c in ("cats", "dogs", "owls"):
        (tmp_path / "folder" / c).mkdir(parents=True)
    for i, (img, lab) in enumerate(zip(synthetic_splits["train"].images[:60], synthetic_splits["train"].labels[:60])):
        Image.fromarray(img).save(tmp_path / "folder" / ("cats", "dogs", "owls")[lab % 3] / f"{i}.png")
    (tmp_path / "folder" / "cats" / "broken.png").write_bytes(b"not a png")
    cfg = PretrainConfig(method="supervised", source=str(tmp_path / "folder"), epochs=1, batch_size=16,
                         max_steps_per_epoch=2)
    res = pretrain_supervised(_tiny(), PRE, cfg, tmp_path / "work")
    model, info = checkpoints.load_model(res["best_path"])
    assert model.cfg.num_classes == 3 and info["classes"] == ["cats", "dogs", "owls"]


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path, data_dir):
    out = tmp_path / "ddp.pt"
    r = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "-m", "vitedge.finetune", "--data", str(data_dir), "--out", str(out), "--device", "cpu",
              "--model-json", json.dumps(TINY),
              "--train-json", json.dumps({"epochs": 1, "batch_size": 32, "max_steps_per_epoch": 2})])
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["history"][0]["img_per_s"] > 0
    checkpoints.load_model(out)


def test_bf16_on_a_cpu_without_bf16_instructions_warns(monkeypatch, caplog):
    """`amp: bf16` trains anywhere, but on a CPU without avx512_bf16/AMX it is emulated and slower than
    fp32: the engine says so (and how to turn it off); with the instructions, or amp off/auto, it is quiet."""
    from vitedge import engine

    cpu = {"model": "Old Xeon", "features": ["avx2", "avx512f"]}
    monkeypatch.setattr(engine, "cpu_info", lambda: cpu)
    assert engine.warn_if_bf16_is_emulated(TrainConfig(amp="bf16"), torch.device("cpu"))
    assert "amp: bf16 on a CPU without avx512_bf16" in caplog.text and "set amp: off" in caplog.text
    assert not engine.warn_if_bf16_is_emulated(TrainConfig(amp="off"), torch.device("cpu"))
    assert not engine.warn_if_bf16_is_emulated(TrainConfig(amp="auto"), torch.device("cpu"))
    assert not engine.warn_if_bf16_is_emulated(TrainConfig(amp="bf16"), torch.device("cuda"))
    cpu["features"] = ["avx2", "avx512_bf16"]
    assert not engine.warn_if_bf16_is_emulated(TrainConfig(amp="bf16"), torch.device("cpu"))
