"""The whole Snakemake workflow on a tiny config: data -> ... -> validate -> report -> check_budgets.

One run (a copy of the workflow in a temporary folder, the package from this checkout), then
checks in order, each building on the last: the report has a row for every artefact x target
(skips included) and plots that open; a dry rerun has nothing to do; deleting one artefact
rebuilds only what depends on it; an impossible budget fails the run *after* the report is written.
It is one test, not several, so pytest-xdist cannot split the steps across workers (each would
pay for its own run).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RUN = "tiny"
# fast formats only: ExecuTorch / Core ML exports take longer than this whole test should
EXPORT_FORMATS = ["onnx", "ort", "tensorrt-fp16"]  # tensorrt: built where TensorRT and a GPU are, else skipped rows
QUANTIZE_FORMATS = ["onnx"]
QUICK_BENCH = {"warmup": 2, "warmup_seconds": 0.0, "min_iters": 5, "max_iters": 20, "max_seconds": 0.2,
               "time_cap": 2.0, "batch_sizes": [8], "throughput_min_iters": 2, "throughput_max_seconds": 0.1}


def tiny_config() -> dict:
    """The repo's default config, shrunk: few synthetic faces, one short epoch per stage, fast formats.

    Built from workflow/config.yaml so keys other stages add are kept; only the ones present are shrunk."""
    cfg = yaml.safe_load((REPO / "workflow" / "config.yaml").read_text())
    cfg["run"] = RUN
    cfg["data"].update(source="synthetic", per_class=30)
    for stage in ("pretrain", "finetune", "distill"):
        if isinstance(cfg.get(stage), dict):
            cfg[stage].update(epochs=1, max_steps_per_epoch=2, warmup_epochs=0)
    if isinstance(cfg.get("export"), dict):
        cfg["export"]["formats"] = EXPORT_FORMATS
    if isinstance(cfg.get("quantize"), dict):
        # dynamic int8 needs no calibration pass; an untrained model may lose anything
        cfg["quantize"].update(formats=QUANTIZE_FORMATS, method="dynamic", calibration=32, max_drop=100.0)
    # tiny untrained models: no budget binds here (the last step sets an impossible one on purpose)
    cfg["validate"] = {**cfg.get("validate", {}), "targets": ["cpu", "gpu", "mobile"], "bench": QUICK_BENCH,
                       "limit": 60, "budgets": {"max_drop_points": 100.0, "min_agreement": 0.0}}
    return cfg


def copy_workflow(dst: Path) -> None:
    """The workflow (Snakefile, rules, schema, configs, targets) into `dst`: the commands it runs are all
    the package's (`python -m vitedge...`), nothing of benchmarks/."""
    shutil.copy(REPO / "Snakefile", dst / "Snakefile")
    for folder in ("workflow", "runtimes"):
        shutil.copytree(REPO / folder, dst / folder, ignore=shutil.ignore_patterns("__pycache__"))


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "2"}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "tiny.yaml", "--workflow-profile", "none",
           *args]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """{rule: count} from a dry run's job table."""
    table = proc.stdout.split("Job stats:")[-1] if "Job stats:" in proc.stdout else ""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M) if m[1] != "total"}


def test_workflow_end_to_end(tmp_path):
    pytest.importorskip("snakemake")
    pytest.importorskip("matplotlib")
    copy_workflow(tmp_path)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_config()))
    proc = snakemake(tmp_path, "all")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    check_report_has_every_artefact_target_pair(tmp_path)
    check_rerun_has_nothing_to_do(tmp_path)
    check_deleting_one_artefact_rebuilds_only_its_dependants(tmp_path)
    check_impossible_budget_fails_after_the_report(tmp_path)


def check_report_has_every_artefact_target_pair(workflow: Path) -> None:
    from PIL import Image

    from vitedge.artefact import CHECKPOINT
    from vitedge.hosts import tensorrt_available
    from vitedge.targets import load_target

    out = workflow / "results" / RUN
    # the training checkpoints are artefact key checkpoint-fp32 (validation/student-checkpoint-fp32@cpu.json)
    artefacts = [(p.stem, CHECKPOINT, "fp32") for p in (out / "models").glob("*.pt") if p.stem in ("teacher", "student")]
    for meta in (out / "artefacts").glob("*/*/meta.json"):
        fmt, prec = meta.parent.name.split("-")
        artefacts.append((meta.parent.parent.name, fmt, prec))
    assert {("student", f, "fp32") for f in ("onnx", "ort")} <= set(artefacts)
    assert (out / "validation" / "student-checkpoint-fp32@cpu.json").is_file()
    trt_here, _ = tensorrt_available()
    if not trt_here:  # not built: the matrix still has its rows, skipped with the reason
        artefacts.append(("student", "tensorrt", "fp16"))
    targets = [load_target(workflow / "runtimes" / f"{t}.yaml") for t in ("cpu", "gpu", "mobile")]
    expected = {(m, f, p, t.name) for m, f, p in artefacts for t in targets if t.accepts(f, p)}
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    seen = {(r["model"], r["format"], r["artefact_precision"], r["target"]) for r in metrics["rows"]}
    assert seen == expected
    assert all(r["status"] in ("ok", "skipped") for r in metrics["rows"]), metrics["rows"]
    assert any(r["target"] == "gpu" and r["status"] == "skipped" and r["reason"] for r in metrics["rows"])
    if not trt_here:
        trt_rows = [r for r in metrics["rows"] if r["format"] == "tensorrt"]
        assert trt_rows and all(r["status"] == "skipped" and "not built" in r["reason"] for r in trt_rows), trt_rows
    assert (out / "reports" / "compression.md").is_file()  # the benchmark runs in the workflow
    assert metrics["verdict"]["passed"] is True and (out / "report" / "verdict.json").is_file()
    assert (out / "report" / "report.md").is_file() and (out / "report" / "metrics.csv").is_file()
    pngs = list((out / "report").glob("*.png"))
    assert any(p.name == "pareto-cpu.png" for p in pngs)
    for p in pngs:
        with Image.open(p) as im:
            im.load()


def check_rerun_has_nothing_to_do(workflow: Path) -> None:
    proc = snakemake(workflow, "all", "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]


def check_deleting_one_artefact_rebuilds_only_its_dependants(workflow: Path) -> None:
    meta = workflow / "results" / RUN / "artefacts" / "student" / "ort-fp32" / "meta.json"
    assert meta.is_file()
    meta.unlink()
    proc = snakemake(workflow, "all", "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = planned_jobs(proc)
    # the .ort export, its one validation (mobile), the compression benchmark (it compares every fp32
    # artefact with its int8 form), the report and the budget check; no training, no other export
    assert jobs.get("validate") == 1 and jobs.get("report") == 1 and jobs.get("check_budgets") == 1, jobs
    assert not {"data", "pretrain", "finetune", "distill"} & set(jobs), jobs
    assert sum(jobs.values()) <= 6, jobs
    proc = snakemake(workflow, "all")  # put it back for the tests that follow
    assert proc.returncode == 0, proc.stderr[-3000:]


def check_impossible_budget_fails_after_the_report(workflow: Path) -> None:
    cfg = yaml.safe_load((workflow / "tiny.yaml").read_text())
    cfg["validate"]["budgets"] = {"max_drop_points": -100.0, "min_agreement": None}  # must gain 100 points: never
    (workflow / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    report = workflow / "results" / RUN / "report" / "index.html"
    before = report.stat().st_mtime
    proc = snakemake(workflow, "all")
    assert proc.returncode != 0
    assert "OVER BUDGET" in proc.stdout + proc.stderr
    assert report.stat().st_mtime > before  # rewritten with the new verdicts before the check failed
    metrics = json.loads((report.parent / "metrics.json").read_text())
    assert metrics["verdict"]["passed"] is False and metrics["verdict"]["failures"]
    assert not (report.parent / "verdict.json").exists()
