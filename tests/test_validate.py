"""vitedge.validate and vitedge.targets: rows for runnable, absent and broken runtimes; budgets; the CLI.

A randomly initialised vit-micro-48 is enough: parity and the row logic do not care whether the
model is any good, and it keeps every test a few seconds on 2 cores.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from vitedge.bench import BenchConfig
from vitedge.targets import Target, artefact_spec, load_target, matrix, unmet
from vitedge.validate import Budgets, main, unbuilt, validate
from vitedge.validation_rows import Parity, ValidationResult, ValidationRow

# as little timing as still exercises the protocol
QUICK = {"warmup": 1, "warmup_seconds": 0.0, "min_iters": 3, "max_iters": 3, "max_seconds": 0.05,
         "batch_sizes": [4], "throughput_min_iters": 2, "throughput_max_seconds": 0.05}
LIMIT = 35  # test images
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, synthetic_splits):
    from vitedge.checkpoints import save_model
    from vitedge.data import CLASSES, save_splits
    from vitedge.model import create_model
    from vitedge.preprocess import Preprocess

    root = tmp_path_factory.mktemp("validate")
    save_splits(root / "data", synthetic_splits, source={"kind": "synthetic"})
    torch.manual_seed(0)
    save_model(root / "student.pt", create_model("vit-micro-48", distilled=True), Preprocess(), list(CLASSES))
    return root


def write_target(path, entries, **top):
    path.write_text(yaml.safe_dump({"name": path.stem, "entries": entries, **top}))
    return path


def test_checkpoint_row_is_its_own_reference(workdir):
    r = validate(workdir / "student.pt", workdir / "student.pt", "cpu", workdir / "data", bench=QUICK, limit=LIMIT)
    assert (r.model, r.format, r.precision, r.target) == ("student", "checkpoint", "fp32", "cpu")
    assert r.status == "ok" and r.verdict.passed is True
    (row,) = r.rows
    assert row.status == "ok" and row.runtime == "torch"
    assert row.parity.top1_agreement == 1.0 and row.parity.max_abs_delta == 0.0
    assert row.drop_points == 0.0 and row.accuracy.n == LIMIT
    assert len(row.accuracy.confusion) == 7 and len(row.accuracy.per_class) == 7
    lat = row.latency_ms
    assert lat.n == 3 and lat.warmup == 1 and lat.p50 <= lat.p99
    assert [t.batch for t in row.throughput] == [4]
    assert row.memory.peak_delta_mb >= 0 and row.size_bytes > 0
    assert row.threads >= 1 and row.runtime_info["version"] == torch.__version__
    assert r.machine["cpu"]["cores"] >= 1 and r.machine_line
    assert r.data.n == LIMIT and len(r.data.sha256) == 64
    assert row.verdict.limits.max_drop_points == Budgets().max_drop_points  # the default budgets, in points
    # what is written reads back as it was
    assert ValidationResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_onnx_row_matches_reference(workdir):
    pytest.importorskip("onnxruntime")
    from vitedge.verify import export_verified

    meta = export_verified(workdir / "student.pt", workdir / "artefacts", "student", "onnx", "fp32")
    art = workdir / "artefacts" / "student" / "onnx-fp32"
    assert meta["format"] == "onnx"
    r = validate(art, workdir / "student.pt", "cpu", workdir / "data", bench=QUICK, limit=LIMIT)
    (row,) = r.rows
    assert (r.format, r.precision, row.runtime, row.status) == ("onnx", "fp32", "onnx", "ok")
    assert row.parity.top1_agreement == 1.0
    assert row.parity.max_abs_delta < 1e-3 and row.parity.kl < 1e-6
    assert abs(row.drop_points) < 1e-7 and row.verdict.passed
    # a target that does not run onnx: no rows, and it says why
    r = validate(art, workdir / "student.pt", "gpu", workdir / "data", bench=QUICK, limit=LIMIT)
    assert r.rows == [] and r.status == "skipped" and "runs none of its entries" in r.reason


def test_gpu_target_is_skipped_without_cuda(workdir):
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA: the gpu target runs")
    r = validate(workdir / "student.pt", workdir / "student.pt", "gpu", workdir / "data", bench=QUICK, limit=LIMIT)
    assert r.status == "skipped" and len(r.rows) >= 2  # eager fp32, fp16, ...
    assert all(row.status == "skipped" and "CUDA" in row.reason for row in r.rows)
    assert r.verdict.passed is None and r.data is None  # nothing loaded for a target that cannot run
    assert "data" not in r.to_dict() and "accuracy" not in r.to_dict()["rows"][0]  # unset: left out of the JSON


def test_rows_for_ok_skipped_failed_and_unsupported_options(workdir, tmp_path):
    target = write_target(tmp_path / "mixed.yaml", [
        {"name": "eager", "artefacts": ["checkpoint-fp32"], "runtime": "torch"},
        {"name": "plan9 only", "artefacts": ["checkpoint-fp32"], "runtime": "torch", "requires": {"os": ["Plan9"]}},
        {"name": "wrong runtime", "artefacts": ["checkpoint-fp32"], "runtime": "onnx"},  # cannot run a .pt: failed
        {"name": "half", "artefacts": ["checkpoint-fp32"], "runtime": "torch", "options": {"no_such_option": 1}},
        {"name": "bf16", "artefacts": ["checkpoint-fp32"], "runtime": "torch", "options": {"dtype": "bf16"}},
    ], threads=1)
    r = validate(workdir / "student.pt", workdir / "student.pt", target, workdir / "data", bench=QUICK, limit=LIMIT)
    rows = {row.entry: row for row in r.rows}
    assert rows["eager"].status == "ok" and rows["eager"].threads == 1
    assert rows["plan9 only"].status == "skipped" and "Plan9" in rows["plan9 only"].reason
    assert rows["wrong runtime"].status == "failed" and "onnx" in rows["wrong runtime"].reason
    assert rows["half"].status == "skipped" and "no_such_option" in rows["half"].reason
    # a runtime option that changes the arithmetic: its own precision, compared with the fp32 reference
    bf16 = rows["bf16"]
    assert bf16.status == "ok" and bf16.precision == "bf16" and bf16.artefact_precision == "fp32"
    assert 0 < bf16.parity.max_abs_delta < 0.5 and bf16.runtime_info["dtype"] == "bfloat16"
    # one failed row fails the file and its verdict, with the reason
    assert r.status == "failed" and r.verdict.passed is False
    assert any(f.startswith("wrong runtime: failed:") for f in r.verdict.failures)


def test_impossible_budget_fails_cli_but_json_is_written(workdir, tmp_path, capsys):
    out = tmp_path / "v.json"
    args = ["--artefact", str(workdir / "student.pt"), "--reference", str(workdir / "student.pt"), "--target", "cpu",
            "--data", str(workdir / "data"), "--out", str(out), "--limit", str(LIMIT),
            "--bench-json", json.dumps(QUICK),
            "--budgets-json", json.dumps({"min_agreement": 1.01, "max_drop_points": None})]
    assert main(args) == 1
    r = ValidationResult.from_dict(json.loads(out.read_text()))
    assert r.status == "ok" and r.verdict.passed is False
    assert "agreement 100.00% < 101.00% required" in r.verdict.failures[0]
    assert "OVER BUDGET" in capsys.readouterr().out
    assert main(args + ["--exit-zero"]) == 0  # the workflow's mode: record, fail at the end


def test_budgets_per_precision_in_points():
    b = Budgets.from_dict({"max_drop_points": 1.0, "min_agreement": 0.99,
                           "by_precision": {"int8": {"max_drop_points": 5.0}}})
    row = ValidationRow(entry="e", runtime="onnx", device="cpu", precision="int8", artefact_precision="int8",
                        status="ok", drop_points=3.0, parity=Parity(top1_agreement=0.995, max_abs_delta=0.1,
                                                                    mean_abs_delta=0.01, kl=0.001))
    verdict = b.check(row)
    assert verdict.passed and verdict.limits.max_drop_points == 5.0 and verdict.limits.min_agreement == 0.99
    row.precision = "fp32"
    assert b.check(row).failures == ["top-1 drop 3.00 pts > 1.00 allowed"]
    with pytest.raises(ValueError, match=r"Budgets: unknown key\(s\) \[.max_drop.\]"):
        Budgets.from_dict({"max_drop": 0.1})
    with pytest.raises(ValueError, match="Budgets: unknown key"):  # the old name, a fraction: refused, never misread
        Budgets.from_dict({"max_accuracy_drop": 0.02})


def test_shipped_targets_load_and_agree_with_matrix():
    targets = [load_target(n) for n in ("cpu", "gpu", "mobile")]
    by_name = {t.name: t for t in targets}
    assert by_name["gpu"].requires == {"cuda": True}
    assert by_name["cpu"].accepts("onnx", "int8") and not by_name["cpu"].accepts("coreml", "fp32")
    assert by_name["mobile"].threads_for(by_name["mobile"].entries[0]) <= 4
    pairs = matrix(targets, [("student", "checkpoint", "fp32"), ("student", "coreml", "fp32"), ("student", "ort", "int8")])
    assert ("student", "checkpoint", "fp32", "gpu") in pairs and ("student", "coreml", "fp32", "mobile") in pairs
    assert ("student", "coreml", "fp32", "cpu") not in pairs and ("student", "ort", "int8", "mobile") in pairs
    assert isinstance(by_name["cpu"].bench, BenchConfig)


def test_unbuilt_artefact_gets_skipped_rows(tmp_path, capsys):
    gpu = REPO / "runtimes" / "gpu.yaml"
    result = unbuilt("student", "tensorrt", "fp16", gpu, "TensorRT is not installed")
    assert result.rows and result.status == "skipped" and result.verdict.passed is None
    assert all(r.reason == "not built: TensorRT is not installed" for r in result.rows)
    out = tmp_path / "v.json"
    assert main(["--artefact", "none", "--unbuilt", "student:tensorrt-fp16:no GPU: none here", "--reference", "x.pt",
                 "--target", str(gpu), "--data", str(tmp_path), "--out", str(out)]) == 0
    written = ValidationResult.from_dict(json.loads(out.read_text()))
    assert written.format == "tensorrt" and written.rows[0].reason == "not built: no GPU: none here"
    assert "skipped: not built" in capsys.readouterr().out


def test_artefact_spec():
    assert artefact_spec("onnx") == ("onnx", "fp32") and artefact_spec("onnx", "int8") == ("onnx", "int8")
    assert artefact_spec("coreml-fp16") == ("coreml", "fp16")
    assert artefact_spec({"format": "ort", "precision": "int8"}) == ("ort", "int8")


def test_unmet_requirements():
    assert unmet({}) is None
    assert "Plan9" in unmet({"os": ["Plan9"]})
    assert "no_such_module_xyz" in unmet({"modules": ["no_such_module_xyz"]})
    if not torch.cuda.is_available():
        assert "CUDA" in unmet({"cuda": True})


def test_bad_target_file(tmp_path):
    with pytest.raises(ValueError, match="<format>-<precision>"):
        load_target(write_target(tmp_path / "t.yaml", [{"name": "x", "artefacts": ["onnx"], "runtime": "onnx"}]))
    with pytest.raises(ValueError, match="unknown requirement"):
        load_target(write_target(tmp_path / "t.yaml", [], requires={"tpu": True}))
    with pytest.raises(FileNotFoundError, match="cpu"):
        load_target("no-such-target")
    assert isinstance(load_target(write_target(tmp_path / "t.yaml", [])), Target)


def test_stand_in_label(tmp_path):
    t = load_target(write_target(tmp_path / "phone.yaml", [], native_os=["iOS", "Android"]))
    assert t.stand_in().startswith("host stand-in")
    assert load_target(write_target(tmp_path / "any.yaml", [])).stand_in() == ""
