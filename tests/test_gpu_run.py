"""The prepared GPU command (benchmarks/gpu_run.py) and what it stands on: its --smoke run on the CPU
(so the command cannot rot between GPU sessions), the carried image pack, the ResNet-style teacher
presets, and the engine's device-side batches and augmentation."""
from __future__ import annotations

import copy
import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from vitedge import checkpoints
from vitedge.data import CLASSES, load_fer2013, make_synthetic, save_splits
from vitedge.data.augment import BatchAugment, InMemoryBatches
from vitedge.data.fer2013 import pack_images, read_pack
from vitedge.model import create_model
from vitedge.plan import write_config_schema
from vitedge.preprocess import Preprocess
from vitedge.validation_rows import load_result

REPO = Path(__file__).resolve().parents[1]
RETURNED_FILE_LIMIT = 16 * 2**20  # the GPU machine returns at most 8 files of 16 MiB each


def _fer_zip(path: Path, per_class: int = 4) -> Path:
    """A FER-layout zip of synthetic faces: train/ plus a test/ the pack must leave out."""
    splits = make_synthetic(per_class=per_class, seed=1)
    with zipfile.ZipFile(path, "w") as zf:
        for split, folder, prefix in (("train", "train", "Training"), ("test", "test", "PublicTest")):
            for i, (img, label) in enumerate(zip(splits[split].images, splits[split].labels)):
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="JPEG", quality=90)
                zf.writestr(f"{folder}/{CLASSES[label]}/{prefix}_{i}.jpg", buf.getvalue())
    return path


def test_pack_keeps_every_training_file_byte_for_byte_and_reads_like_the_zip(tmp_path):
    src = _fer_zip(tmp_path / "fer.zip")
    info = pack_images(src, tmp_path / "train.npz", "train/")
    packed = read_pack(tmp_path / "train.npz")
    with zipfile.ZipFile(src) as zf:
        train_names = sorted(n for n in zf.namelist() if n.startswith("train/"))
        assert sorted(packed) == train_names and info["count"] == len(train_names)
        assert all(zf.read(n) == packed[n] for n in train_names)
        only_train = tmp_path / "train-only.zip"
        with zipfile.ZipFile(only_train, "w") as out:
            for n in train_names:
                out.writestr(n, zf.read(n))
    from_pack, report = load_fer2013(tmp_path / "train.npz", val_fraction=0.1, progress=False)
    from_zip, _ = load_fer2013(only_train, val_fraction=0.1, progress=False)
    assert report["kind"] == "packed"
    for name in ("train", "val", "test"):  # val and test carved from Training alike, seeded
        assert np.array_equal(from_pack[name].images, from_zip[name].images)
        assert from_pack[name].paths == from_zip[name].paths


def test_resnet_presets_fit_the_returned_file_and_round_trip(tmp_path):
    for preset, stem in (("resnet18-half-48", 48), ("resnet18-half-s2-48", 24)):
        model = create_model(preset).eval()
        assert 2.5e6 < model.num_params() < 3.0e6
        assert model.num_params() * 4 < RETURNED_FILE_LIMIT
        assert model.features[0].stride == ((1, 1) if stem == 48 else (2, 2))
        x = torch.randn(2, 1, 48, 48)
        checkpoints.save_model(tmp_path / f"{preset}.pt", model, Preprocess(), list(CLASSES))
        loaded, info = checkpoints.load_model(tmp_path / f"{preset}.pt")
        assert info["config"]["block"] == "basic"
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x)) and loaded(x).shape == (2, 7)
    # a plain CNN keeps its parameter names: checkpoints written before `block` existed still load
    assert "features.0.weight" in create_model("cnn-small-48").state_dict()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batches_and_augmentation_stay_on_the_gpu(synthetic_splits):
    pre = Preprocess()
    batches = InMemoryBatches(synthetic_splits["train"], pre, 32, device="cuda")
    images, labels = next(iter(batches.epoch(0)))
    out = BatchAugment(pre, "strong")(images, torch.Generator(device="cuda").manual_seed(0))
    assert images.is_cuda and labels.is_cuda and out.is_cuda and out.shape == (32, 1, 48, 48)


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory) -> Path:
    """`gpu_run.py --smoke`, as the GPU command runs, in a subprocess (one thread: ~10 s on 2 cores)."""
    tmp = tmp_path_factory.mktemp("gpu_smoke")
    out = tmp / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_run.py"), "--smoke", "--out", str(out),
                           "--work", str(tmp / "work")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_smoke_run_writes_what_a_gpu_run_returns(smoke_out):
    out = smoke_out
    files = sorted(p.name for p in out.iterdir())
    assert files == ["gpu_run.log", "student.json", "student.pt", "teacher.json", "teacher.pt",
                     "validation-student-gpu.json", "validation-teacher-gpu.json"]
    assert len(files) <= 8 and all((out / f).stat().st_size < RETURNED_FILE_LIMIT for f in files)
    teacher, student = (json.loads((out / f"{m}.json").read_text()) for m in ("teacher", "student"))
    assert teacher["stage"] == "finetune" and teacher["model"]["preset"] == "resnet18-half-48"
    assert student["stage"] == "distill" and student["model"]["preset"] == "hybrid-tiny-48"
    assert student["teacher"]["summary"]["stage"] == "finetune"  # the lineage travels with the student
    for summary in (teacher, student):
        plan = summary["gpu_run"]["plan"]
        assert plan["epochs"] == summary["train_config"]["epochs"] == len(summary["history"]) == 2
    assert teacher["gpu_run"]["probes"][0]["img_per_s"] > 0
    for model in ("student", "teacher"):
        result = load_result(out / f"validation-{model}-gpu.json")  # strict: what gpu_import reads
        assert result.target == "gpu" and result.status == "skipped"
        assert [r.entry for r in result.rows] == ["torch eager", "torch eager fp16", "torch eager bf16",
                                                  "torch.compile fp16"]
        assert all(r.status == "skipped" and "CUDA" in r.reason for r in result.rows)
    for model in ("teacher", "student"):  # what comes back loads as a workflow checkpoint
        checkpoints.load_model(out / f"{model}.pt")
    assert "done:" in (out / "gpu_run.log").read_text()


def test_a_given_teacher_and_a_student_init_continue_instead_of_starting_over(smoke_out, tmp_path):
    """`--teacher` skips the teacher stage (no teacher files back); `--student-init` starts the student from
    those weights, recorded as its `init`, at the lr asked for, with the teacher's hash in its config;
    the distillation settings asked for are the ones trained with."""
    ckpt = checkpoints.read_checkpoint(smoke_out / "student.pt")
    ckpt["state_dict"]["head.weight"].fill_(0.5)  # weights no fresh student has
    init = tmp_path / "init.pt"
    torch.save(ckpt, init)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_run.py"), "--smoke", "--out", str(out),
                           "--work", str(tmp_path / "work"), "--teacher", str(smoke_out / "teacher.pt"),
                           "--student-init", str(init), "--student-lr", "0.0005",
                           "--student-batch", "16", "--distillation", "soft", "--tau", "3", "--alpha", "0.7"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_run.log", "student.json", "student.pt",
                                                     "validation-student-gpu.json"]
    student = json.loads((out / "student.json").read_text())
    assert student["init"]["sha256"] == checkpoints.sha256_file(init)
    assert student["train_config"]["lr"] == 0.0005 and student["train_config"]["batch_size"] == 16
    assert (student["train_config"]["distillation_type"], student["train_config"]["tau"],
            student["train_config"]["alpha"]) == ("soft", 3.0, 0.7)
    assert student["teacher"]["sha256"] == checkpoints.sha256_file(smoke_out / "teacher.pt")
    head = checkpoints.read_checkpoint(out / "student.pt")["state_dict"]["head.weight"]
    assert (head - 0.5).abs().max() < 0.05  # four small steps from the given weights, not a fresh start


def _gpu_import():
    spec = importlib.util.spec_from_file_location("gpu_import", REPO / "benchmarks" / "gpu_import.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_import_takes_a_given_teachers_files_from_the_run_that_trained_it(smoke_out, tmp_path):
    """A run given --teacher returns the student alone: gpu_import refuses it with the fix in the message,
    and with --teacher-from assembles one folder with both (the returned student's files unchanged)."""
    gpu_import = _gpu_import()
    returned = tmp_path / "returned"
    returned.mkdir()
    for name in ("gpu_run.log", "student.json", "student.pt", "validation-student-gpu.json"):
        (returned / name).write_bytes((smoke_out / name).read_bytes())
    assert gpu_import.assemble(smoke_out, None, tmp_path / "unused") == smoke_out  # complete: used as it is
    with pytest.raises(SystemExit, match="--teacher-from"):
        gpu_import.assemble(returned, None, tmp_path / "assembled")
    with pytest.raises(SystemExit, match="teacher.pt"):
        gpu_import.assemble(returned, tmp_path / "empty", tmp_path / "assembled")
    folder = gpu_import.assemble(returned, smoke_out, tmp_path / "assembled")
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in smoke_out.iterdir())
    for name in ("student.pt", "teacher.pt", "validation-teacher-gpu.json"):
        assert (folder / name).read_bytes() == (smoke_out / name).read_bytes()
    (returned / "student.pt").unlink()  # the student itself cannot come from elsewhere
    with pytest.raises(SystemExit, match="student.pt"):
        gpu_import.assemble(returned, smoke_out, tmp_path / "assembled2")


def _merged(base: dict, over: dict) -> dict:
    """What `--configfile over` makes of `base` (tests/test_config_schema.py's rule: nested dicts merge)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def test_import_places_the_returned_models_for_an_mtime_rerun(smoke_out, tmp_path, synthetic_splits):
    """benchmarks/gpu_import.py on the smoke run's files: a config overlay the schema accepts, models placed
    oldest first (no training rule out of date), the distill table, the GPU rows as a committed table."""
    gpu_import = _gpu_import()
    run_dir = tmp_path / "results" / "fer2013-gpu"
    _, info = checkpoints.load_model(smoke_out / "teacher.pt")
    extra = gpu_import.overlay(run_dir, info, smoke_out)
    cfg = yaml.safe_load((REPO / "workflow" / "config.yaml").read_text())
    for layer in (gpu_import.CONFIG, extra):
        cfg = _merged(cfg, yaml.safe_load(layer.read_text()))
    snakemake_utils = pytest.importorskip("snakemake.utils")
    # as the Snakefile validates: the schema file with the format table's words put in
    snakemake_utils.validate(cfg, str(write_config_schema(REPO / "workflow" / "schemas" / "config.schema.yaml",
                                                          tmp_path / "schema")))
    assert create_model(cfg["models"]["teacher"]["preset"], **cfg["models"]["teacher"]["overrides"]).cfg == \
        create_model(info["config"]).cfg and cfg["compute"]["device"] == "cpu"
    data_dir = tmp_path / "data"
    save_splits(data_dir, synthetic_splits, {"kind": "synthetic"})
    gpu_import.place_models(smoke_out, run_dir)
    gpu_import.gpu_table(smoke_out, tmp_path / "reports")
    scores = gpu_import.score(run_dir, data_dir)
    models = run_dir / "models"
    order = [models / "teacher-pretrain.pt", models / "teacher.pt", models / "student.pt",
             run_dir / "reports" / "distill.md", run_dir / "reports" / "distill.json"]
    mtimes = [p.stat().st_mtime_ns for p in order]
    assert mtimes == sorted(mtimes) and mtimes[0] > (data_dir / "manifest.json").stat().st_mtime_ns
    assert 0 <= scores["student"]["val_top1"] <= 1 and 0 <= scores["shipped_val"] <= 1
    table = (tmp_path / "reports" / "gpu_validation.md").read_text()
    assert "torch.compile fp16 | skipped" in table and "Measured on" in table
    assert (tmp_path / "reports" / "validation-student-gpu.json").is_file()
