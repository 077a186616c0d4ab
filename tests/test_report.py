"""vitedge.report from synthetic validation results: every row present, self-contained HTML, PNGs that open.

The results are built through vitedge.validation_rows' dataclasses, as vitedge.validate builds them: a
field renamed there breaks these fixtures instead of passing them with a hand-written dict.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import re
from dataclasses import fields, replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitedge.data import CLASSES
from vitedge.metrics import classification_metrics, parity_metrics
from vitedge.report import compare_models, flatten, main, pareto_front, render_html, summarise, write_report
from vitedge.report.tables import COMPARE, MATRIX, SPEEDUP, Compared, Record, Speedup, matrix_cells
from vitedge.validation_rows import (Accuracy, Budgets, HostLoad, Latency, Memory, Parity, ReferenceAccuracy,
                                     Throughput, ValidationResult, ValidationRow, Verdict, decode, load_result)

REPO = Path(__file__).resolve().parents[1]
MACHINE = {"cpu": {"model": "Test CPU", "cores": 2, "features": []}, "gpu": None, "os": "Linux",
           "libraries": {"numpy": "2"}}
BUDGETS = Budgets(max_drop_points=2.0, min_agreement=0.95, by_precision={"int8": {"max_drop_points": 3.0}})


def make_row(entry, precision, top1_noise, p50, size, rng, verdict=None, status="ok", reason=""):
    row = ValidationRow(entry=entry, runtime="onnx", device="cpu", threads=2, precision=precision,
                        artefact_precision=precision, status=status, reason=reason)
    if status != "ok":
        return row
    labels = rng.integers(0, 7, 200)
    ref = rng.normal(size=(200, 7)) + 3 * np.eye(7)[labels]
    logits = ref + rng.normal(scale=top1_noise, size=ref.shape)
    acc, ref_acc = classification_metrics(logits, labels, CLASSES), classification_metrics(ref, labels, CLASSES)
    row.accuracy = decode(Accuracy, acc)
    row.reference_accuracy = ReferenceAccuracy(top1=ref_acc["top1"], macro_f1=ref_acc["macro_f1"])
    row.drop_points = 100 * (ref_acc["top1"] - acc["top1"])
    row.parity = decode(Parity, parity_metrics(logits, ref))
    row.latency_ms = Latency(p50=p50, p90=p50 * 1.1, p99=p50 * 1.3, n=100)
    row.throughput = [Throughput(batch=8, images_per_s=8 / (p50 * 4e-3))]
    row.memory = Memory(peak_delta_mb=12.5)
    row.size_bytes, row.runtime_info = size, {"version": "1.0"}
    row.verdict = verdict or Verdict(True, [], BUDGETS.for_precision(precision))
    return row


def result(model, fmt, precision, target, rows, status="ok", reason="", line="Test CPU (2 cores), no GPU"):
    return ValidationResult(model=model, format=fmt, precision=precision, target=target, status=status,
                            reason=reason, rows=rows, machine=MACHINE, machine_line=line, budgets=BUDGETS)


def build_results() -> list[ValidationResult]:
    """teacher/student x torch/onnx/int8 on cpu, a skipped gpu, a mobile stand-in, a skip and a failure."""
    rng = np.random.default_rng(0)
    no_cuda = "no CUDA GPU (no NVIDIA driver on this host)"
    fail = Verdict(False, ["top-1 drop 4.00 pts > 3.00 allowed"], BUDGETS.for_precision("int8"))
    busy_row = make_row("torch eager", "fp32", 0.0, 4.0, 11_000_000, rng)
    busy_row.host_load = HostLoad(before=3.5, after=1.0)  # 2 cores: busy
    return [
        result("teacher", "torch", "fp32", "cpu", [busy_row]),
        result("student", "torch", "fp32", "cpu", [make_row("torch eager", "fp32", 0.0, 1.5, 3_000_000, rng)]),
        result("student", "onnx", "fp32", "cpu", [make_row("onnxruntime", "fp32", 0.01, 0.6, 3_000_000, rng)]),
        result("student", "onnx", "int8", "cpu", [make_row("onnxruntime", "int8", 1.5, 0.4, 900_000, rng,
                                                           verdict=fail)]),
        result("student", "torch", "fp32", "gpu", [make_row("torch eager", "fp32", 0, 0, 0, rng, status="skipped",
                                                            reason=no_cuda),
                                                   make_row("torch eager fp16", "fp16", 0, 0, 0, rng, status="skipped",
                                                            reason=no_cuda)], status="skipped"),
        result("student", "executorch", "fp32", "mobile",
               [replace(make_row("ExecuTorch XNNPACK", "fp32", 0.01, 0.9, 3_100_000, rng), stand_in="host stand-in")],
               line="Other CPU (4 cores), no GPU"),
        result("student", "coreml", "fp32", "mobile", [make_row("Core ML", "fp32", 0, 0, 0, rng, status="skipped",
                                                                reason="needs Darwin (this host runs Linux)")],
               status="skipped"),
        result("student", "ort", "fp32", "mobile", [make_row("ORT mobile", "fp32", 0, 0, 0, rng, status="failed",
                                                             reason="ArtefactError: broken")], status="failed"),
    ]


@pytest.fixture(scope="module")
def results():
    return build_results()


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, results):
    out = tmp_path_factory.mktemp("report")
    distill = {"distillation": {"type": "hard", "epochs": 1},
               "models": {"teacher": {"params": 2.7e6, "test_top1": 0.6},
                          "student": {"params": 0.8e6, "test_top1": 0.55}}}
    write_report(results, out, distill=distill, title="test report")
    return out


def test_every_row_is_in_every_output(report_dir, results):
    n_rows = sum(len(r.rows) for r in results)
    with open(report_dir / "metrics.csv", newline="") as fh:
        records = list(csv.DictReader(fh))
    assert len(records) == n_rows == 9
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert len(metrics["rows"]) == n_rows
    assert metrics["counts"] == {"ok": 5, "skipped": 3, "failed": 1}
    md = (report_dir / "report.md").read_text()
    page = (report_dir / "index.html").read_text()
    table = md.split("## Validation matrix")[1].split("## Teacher")[0]
    # rows that ran or failed in the table; the 3 skipped ones as one line per (target, reason)
    assert sum(line.startswith("| student") or line.startswith("| teacher") for line in table.splitlines()) == 6
    assert [line for line in table.splitlines() if line.startswith("- ")] == [
        "- gpu rows: skipped, no CUDA GPU (no NVIDIA driver on this host) (torch eager, torch eager fp16; 2 rows)",
        "- mobile rows: skipped, needs Darwin (this host runs Linux) (Core ML; 1 row)"]
    for rec in records:
        assert rec["entry"] in page and rec["entry"] in md
    assert "failed: ArtefactError: broken" in md
    assert "needs Darwin" in page
    assert md.count("⚠") == 2 and "1 row(s) were timed while the host" in md  # the busy-host flag and its note


def test_budget_verdicts_and_machines(report_dir):
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert metrics["verdict"]["passed"] is False
    assert metrics["verdict"]["budgets"] == {"max_drop_points": 2.0, "min_agreement": 0.95,
                                             "by_precision": {"int8": {"max_drop_points": 3.0}}}
    failures = metrics["verdict"]["failures"]
    assert any("onnx-int8 @ cpu" in f and "drop 4.00 pts" in f for f in failures)
    assert any("ort-fp32 @ mobile" in f and "failed" in f for f in failures)
    assert set(metrics["machines"].values()) == {"Test CPU (2 cores), no GPU", "Other CPU (4 cores), no GPU"}
    md = (report_dir / "report.md").read_text()
    assert "## Distillation" in md and "## Where each number was measured" in md and "M2" in md
    # budgets in points, as configured; int8's own where it differs
    assert ("Budgets: top-1 drop at most 2.00 points and agreement with the fp32 reference at least 95.00%; "
            "int8: top-1 drop at most 3.00 points and agreement with the fp32 reference at least 95.00%.") in md
    assert "| drop vs fp32 (pts) |" in md


def test_html_is_self_contained(report_dir):
    page = (report_dir / "index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page)
    assert "<link" not in page and "<script" not in page
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) >= 3  # pareto cpu, pareto mobile, confusion matrices
    for b64 in images:
        Image.open(io.BytesIO(base64.b64decode(b64))).verify()


def test_pngs_beside_open(report_dir):
    pngs = sorted(p.name for p in report_dir.glob("*.png"))
    assert "pareto-cpu.png" in pngs and "pareto-mobile.png" in pngs and "pareto-gpu.png" not in pngs
    assert "confusion-student-onnx-int8.png" in pngs and "confusion-teacher-torch-fp32.png" in pngs
    for name in pngs:
        with Image.open(report_dir / name) as im:
            assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 200
            im.load()
    md = (report_dir / "report.md").read_text()
    assert all(f"]({name})" in md for name in pngs)


def test_teacher_student_int8_comparison(results):
    rows = compare_models(flatten(results))
    cpu = {(r.model, r.precision): r for r in rows if r.target == "cpu"}
    assert set(cpu) == {("teacher", "fp32"), ("student", "fp32"), ("student", "int8")}
    assert cpu[("teacher", "fp32")].speedup == pytest.approx(1.0)
    assert cpu[("student", "fp32")].speedup == pytest.approx(4.0 / 0.6)  # the fastest student fp32 (onnx)
    assert cpu[("student", "int8")].size_ratio == pytest.approx(0.9 / 11)


def test_pareto_front():
    pts = [(1.0, 50.0), (2.0, 60.0), (3.0, 55.0), (0.5, 40.0), (2.5, 60.0)]
    assert pareto_front(pts) == [3, 0, 1]


def test_check_cli(tmp_path, results, capsys):
    files = []
    for i, r in enumerate(results):
        files.append(tmp_path / f"{i}.json")
        files[-1].write_text(json.dumps(r.to_dict()))
    assert main(["check", *map(str, files), "--report", "x/index.html"]) == 1
    err = capsys.readouterr().err
    assert "OVER BUDGET" in err and "onnx-int8 @ cpu" in err and "x/index.html" in err
    ok = [f for f, r in zip(files, results) if r.format in ("torch", "coreml")]
    assert main(["check", *map(str, ok), "--out", str(tmp_path / "verdict.json")]) == 0
    assert json.loads((tmp_path / "verdict.json").read_text())["passed"] is True
    assert main(["write", str(tmp_path), "--out-dir", str(tmp_path / "rep")]) == 0  # a folder of JSONs
    assert (tmp_path / "rep" / "index.html").is_file()


class TableCells(HTMLParser):
    """Every table row of a page as the list of its cells' text, unescaped as a browser shows it."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.in_cell = False

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.rows[-1].append("")
            self.in_cell = True

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.in_cell = False

    def handle_data(self, data):
        if self.in_cell:
            self.rows[-1][-1] += data


def test_html_escapes_values_and_shows_every_row():
    """The jinja2 template autoescapes: markup in a value (a runtime name, a skip reason, the title) is
    shown as text, never run; and every artefact row is in the matrix with all its cells."""
    rng = np.random.default_rng(1)
    evil = "<script>alert(1)</script>"
    results = [
        result("student", "onnx", "fp32", "cpu", [make_row(f"onnxruntime {evil}", "fp32", 0.01, 0.6, 3_000_000, rng)]),
        result("student", "onnx", "int8", "cpu", [make_row("onnxruntime", "int8", 0.5, 0.4, 900_000, rng)]),
        result("student", "coreml", "fp32", "mobile", [make_row("Core ML", "fp32", 0, 0, 0, rng, status="skipped",
                                                                reason=f"needs Darwin {evil}")], status="skipped"),
    ]
    records = flatten(results)
    page = render_html(f"report {evil}", summarise(results, records), [], None)
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<title>report &lt;script&gt;" in page
    assert f"<li>mobile rows: skipped, needs Darwin &lt;script&gt;" in page  # the skipped row's line, escaped
    parser = TableCells()
    parser.feed(page)
    shown = [r for r in records if r.status != "skipped"]
    assert len(records) == 3 and len(shown) == 2
    for r in shown:
        assert matrix_cells(r) in parser.rows  # the whole row, unescaped back to the record's values
    assert any(evil in cell for row in parser.rows for cell in row)


def test_rows_say_when_batch1_ran_on_fewer_threads():
    rng = np.random.default_rng(0)
    fewer = make_row("onnxruntime", "int8", 0.0, 0.4, 900_000, rng)
    fewer.runtime_info = {"version": "1.0", "bs1_threads": 1}
    same = make_row("onnxruntime", "fp32", 0.0, 0.6, 3_000_000, rng)
    same.runtime_info = {"version": "1.0", "bs1_threads": 2}
    records = flatten([result("student", "onnx", "int8", "cpu", [fewer]), result("student", "onnx", "fp32", "cpu", [same])])
    shown = {r.precision: r.threads_shown for r in records}
    assert shown == {"int8": "2 (bs1: 1)", "fp32": 2}
    assert {r.threads for r in records} == {2}  # the thread budget, which rows are matched on


# --------------------------------------------------------------------------- the JSON contract
def test_results_round_trip_through_json(results):
    for r in results:
        text = json.dumps(r.to_dict())
        assert ValidationResult.from_dict(json.loads(text)) == r
    skipped = results[4].to_dict()["rows"][0]
    assert "accuracy" not in skipped and "verdict" not in skipped  # unset measurements are left out


@pytest.mark.parametrize("where, misspelt", [
    (("rows", 0, "parity"), "top1_agrement"),  # a nested measurement
    (("rows", 0), "drop_pts"),  # a row field
    ((), "budget"),  # a result field
])
def test_a_misspelt_key_is_refused_by_name(results, tmp_path, where, misspelt):
    d = results[0].to_dict()
    node = d
    for k in where:
        node = node[k]
    node[misspelt] = node.pop(next(iter(node)))  # rename one key, as a typo at the writer would
    with pytest.raises(ValueError, match=rf"unknown key\(s\) \['{misspelt}'\]"):
        ValidationResult.from_dict(d)
    (tmp_path / "v.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="v.json"):  # the report names the file
        main(["write", str(tmp_path / "v.json"), "--out-dir", str(tmp_path / "rep")])


def test_wrong_types_and_statuses_are_refused(results):
    d = results[0].to_dict()
    d["rows"][0]["status"] = "skiped"
    with pytest.raises(ValueError, match="status 'skiped'"):
        ValidationResult.from_dict(d)
    d = results[0].to_dict()
    d["rows"][0]["latency_ms"]["p50"] = "fast"
    with pytest.raises(ValueError, match=r"rows\[0\]\.latency_ms\.p50 must be float"):
        ValidationResult.from_dict(d)
    with pytest.raises(ValueError, match="not a vitedge validation result"):
        ValidationResult.from_dict({"model": "student", "rows": []})


def test_schema_1_files_load_with_budgets_in_points(tmp_path):
    """Results written before the budgets moved to points (the committed GPU rows among them) still load."""
    committed = sorted((REPO / "reports" / "gpu-run").rglob("validation-*-gpu.json"))
    assert committed
    for path in committed:
        old = json.loads(path.read_text())
        r = load_result(path)
        assert old["schema"] == "vitedge-validation/1" and r.schema == "vitedge-validation/2"
        assert r.budgets.max_drop_points == pytest.approx(100 * old["gates"]["max_accuracy_drop"])
        for row, old_row in zip(r.rows, old["rows"]):
            assert row.drop_points == pytest.approx(100 * old_row["accuracy_drop"])
            assert row.verdict.passed is old_row["gate"]["passed"]
            assert row.verdict.limits.max_drop_points == pytest.approx(2.0)
    v1 = {"schema": "vitedge-validation/1", "model": "student", "format": "onnx", "precision": "int8",
          "target": "cpu", "status": "skipped", "reason": "x", "rows": [],
          "gates": {"max_accuracy_drop": 0.02, "min_agreement": 0.95, "by_precision": {"int8": {"max_accuracy_drop": 0.03}}},
          "gate": {"passed": None, "failures": []}}
    assert ValidationResult.from_dict(v1).budgets == Budgets(2.0, 0.95, {"int8": {"max_drop_points": 3.0}})
    with pytest.raises(ValueError, match="unknown key"):  # still strict about everything else
        ValidationResult.from_dict({**v1, "gatez": {}})


def test_column_specs_name_record_fields():
    names = {f.name for f in fields(Record)}
    assert {a for _, a, _ in MATRIX} <= names
    assert {a for _, a, _ in COMPARE} <= {f.name for f in fields(Compared)}
    assert {a for _, a, _ in SPEEDUP} <= {f.name for f in fields(Speedup)}


def test_absent_hardware_collapses_to_one_line_per_reason(tmp_path):
    """8 gpu rows skipped for one reason are one line under the matrix, not 8 rows repeating it."""
    rng = np.random.default_rng(2)
    no_cuda = "no CUDA GPU (no NVIDIA driver on this host)"
    entries = [("torch eager", "fp32"), ("torch eager fp16", "fp16"), ("torch eager bf16", "bf16"),
               ("torch.compile fp16", "fp16")]
    results = [result("student", "onnx", "fp32", "cpu", [make_row("onnxruntime", "fp32", 0.01, 0.6, 3_000_000, rng)])]
    results += [result(model, "checkpoint", "fp32", "gpu", [make_row(e, p, 0, 0, 0, rng, status="skipped",
                                                                     reason=no_cuda) for e, p in entries],
                       status="skipped") for model in ("teacher", "student")]
    results.append(result("student", "tensorrt", "fp16", "gpu", [make_row(
        "TensorRT", "fp16", 0, 0, 0, rng, status="skipped", reason="not built: TensorRT is not installed")],
        status="skipped"))
    metrics = write_report(results, tmp_path / "rep")
    assert len(metrics["rows"]) == 10  # every row is still in metrics.json / metrics.csv
    md = (tmp_path / "rep" / "report.md").read_text()
    matrix = md.split("## Validation matrix")[1].split("## Teacher")[0]
    assert matrix.count(no_cuda) == 1 and matrix.count("| gpu |") == 0
    assert ("- gpu rows: skipped, no CUDA GPU (no NVIDIA driver on this host) (torch eager, torch eager bf16, "
            "torch eager fp16, torch.compile fp16; 8 rows)") in matrix
    assert "- gpu rows: skipped, not built: TensorRT is not installed (TensorRT; 1 row)" in matrix
    page = (tmp_path / "rep" / "index.html").read_text()
    assert page.count(no_cuda) == 2  # the matrix's line, and the plots section saying why gpu has no plot
