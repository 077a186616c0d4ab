"""One format table (vitedge.artefact.FORMAT_TABLE): it is consistent with the modules it names, and
adding a format is one entry there plus its own modules.

The second half adds a format "dummy" (an exporter, a runtime and an int8 backend written into a
temporary folder, nothing else edited) and follows it through everything that reads the table:
export, verify's static hook, the runtimes (one artefact and a model folder), the quantiser's
backend lookup, the targets, the workflow's plan and config schema, and snakemake's own dry run.
"""
from __future__ import annotations

import copy
import importlib
import os
import pkgutil
import re
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import vitedge.export
import vitedge.quantize
from vitedge import artefact, plan, runtimes, targets
from vitedge.artefact import CHECKPOINT, CHECKPOINT_RUNTIME, FORMAT_TABLE, PRECISIONS, FormatSpec, load_object
from vitedge.export import export_artefact
from vitedge.quantize.core import Backend
from vitedge.runtimes.base import Runtime
from vitedge.verify import export_verified

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"


# --------------------------------------------------------------------------- the table is consistent
@pytest.mark.parametrize("fmt", sorted(FORMAT_TABLE))
def test_every_entry_names_modules_that_exist(fmt):
    spec = FORMAT_TABLE[fmt]
    assert spec.name == fmt and spec.file
    assert set(spec.export_precisions) <= set(PRECISIONS)
    assert bool(spec.exporter) == bool(spec.export_precisions), "an exporter and the precisions it builds go together"
    if spec.exporter:
        module = load_object(spec.exporter)
        assert callable(module.build)
        # the table holds the precisions; a module list of its own could drift from it
        assert not hasattr(module, "PRECISIONS"), f"{spec.exporter} declares PRECISIONS: the table holds them"
        if hasattr(module, "verify"):  # a static check nobody would call unless the table names it
            assert spec.static_verify == f"{spec.exporter}:verify"
    if spec.int8:
        assert issubclass(load_object(spec.int8), Backend)
    if spec.static_verify:
        assert callable(load_object(spec.static_verify))
    runtime = load_object(spec.runtime)
    assert issubclass(runtime, Runtime) and runtime.serves(fmt) and fmt in runtime.served_formats()
    assert set(spec.folder_rank) <= set(runtime.devices)
    if spec.built_from:
        source = FORMAT_TABLE[spec.built_from]
        assert set(spec.export_precisions) - {"int8"} <= set(source.export_precisions)
    assert spec.export_gpu == ("cuda" in runtime.devices and "cpu" not in runtime.devices)


def test_every_backend_module_is_in_the_table():
    """No exporter or runtime class outside the table (it would be dead code, or a second registry)."""
    export_modules = {f"vitedge.export.{m.name}" for m in pkgutil.iter_modules(vitedge.export.__path__)
                      if m.name not in ("common", "__main__")}
    assert export_modules == {s.exporter for s in FORMAT_TABLE.values() if s.exporter}
    named = {load_object(p) for p in [*(s.runtime for s in FORMAT_TABLE.values()), CHECKPOINT_RUNTIME]}
    defined = set()
    for m in pkgutil.iter_modules(runtimes.__path__):
        if m.name.endswith("_rt"):
            module = importlib.import_module(f"vitedge.runtimes.{m.name}")
            defined |= {c for c in vars(module).values()
                        if isinstance(c, type) and issubclass(c, Runtime) and c.__module__ == module.__name__}
    assert defined == named
    assert set(runtimes.registry().values()) == named
    assert runtimes.registry()["torch"].serves(CHECKPOINT)


def test_the_packages_views_are_the_tables():
    assert artefact.FORMATS == tuple(FORMAT_TABLE)
    assert vitedge.export.BUILDERS == {f: s.exporter for f, s in FORMAT_TABLE.items() if s.exporter}
    assert vitedge.quantize.BACKENDS == {f: s.int8 for f, s in FORMAT_TABLE.items() if s.int8}
    assert vitedge.quantize.FORMATS == artefact.int8_formats() == plan.quantize_formats()
    for fmt in artefact.int8_formats():
        assert vitedge.quantize.backend_class(fmt) is load_object(FORMAT_TABLE[fmt].int8)
    with pytest.raises(ValueError, match="no int8 backend for format 'ort'"):
        vitedge.quantize.backend_class("ort")


def test_the_workflow_exports_what_the_quantiser_does_not_make():
    """int8 comes from the quantiser (its accuracy gate) wherever a format has a backend; ort-int8,
    without one, converts the quantiser's onnx-int8 in the export rule."""
    exported = plan.export_precisions()
    assert set(exported) == set(artefact.exported_formats())
    for fmt, precisions in exported.items():
        spec = FORMAT_TABLE[fmt]
        assert ("int8" in precisions) == ("int8" in spec.export_precisions and not spec.int8), fmt
        assert set(precisions) <= set(spec.export_precisions)
    assert "int8" in exported["ort"] and "int8" not in exported["onnx"] and "int8" not in exported["coreml"]
    assert PRECISIONS == ("fp32", "fp16", "int8")
    constraint = re.compile(f"(?:{plan.export_format_re()})")
    assert constraint.match("ort-int8/") and constraint.match("coreml-fp16/")
    assert not constraint.match("onnx-int8/") and not constraint.match("torch-fp32/")


# --------------------------------------------------------------------------- adding a format
EXPORTER = '''
"""The dummy format's exporter: the checkpoint copied as it is."""
import shutil


def build(model, info, art_dir, precision, note="", **_):
    shutil.copyfile(info["source_checkpoint"], art_dir / "model.dummy")
    return "model.dummy", {"dummy": {"note": note}}


def verify(art_dir, meta, model):
    return {"dummy_static": (art_dir / meta["file"]).stat().st_size > 0}
'''
RUNTIME = '''
"""The dummy format's runtime: the copied checkpoint in torch."""
import torch

from vitedge.checkpoints import load_model
from vitedge.runtimes.base import Runtime


class DummyRuntime(Runtime):
    name, priority = "dummy", 5

    def __init__(self, path, meta, device="cpu", threads=None):
        super().__init__(path, meta, device, threads)
        self.model, _ = load_model(self.path / meta["file"])

    def _predict(self, x):
        with torch.no_grad():
            return self.model(torch.from_numpy(x)).numpy()
'''
QUANTISER = '''
from vitedge.quantize.core import Backend


class DummyBackend(Backend):
    fmt = "dummy"
'''
DUMMY = FormatSpec("dummy", "model.dummy", "vitedge_dummy_rt:DummyRuntime", "vitedge_dummy_export",
                   ("fp32", "int8"), int8="vitedge_dummy_q:DummyBackend", static_verify="vitedge_dummy_export:verify",
                   folder_rank={"cpu": 0})
SITECUSTOMIZE = f'''
# the dummy format in every python this folder is on the path of (snakemake's dry run)
from vitedge.artefact import FORMAT_TABLE, FormatSpec

FORMAT_TABLE["dummy"] = {DUMMY!r}
'''


@pytest.fixture
def dummy(tmp_path, monkeypatch):
    """The dummy format: its three modules in a folder on sys.path, its entry in the table."""
    folder = tmp_path / "dummy_modules"
    folder.mkdir()
    for name, text in (("vitedge_dummy_export", EXPORTER), ("vitedge_dummy_rt", RUNTIME),
                       ("vitedge_dummy_q", QUANTISER)):
        (folder / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setitem(FORMAT_TABLE, "dummy", DUMMY)
    yield folder
    for name in ("vitedge_dummy_export", "vitedge_dummy_rt", "vitedge_dummy_q"):
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def ckpt(tiny_ckpt):
    return tiny_ckpt  # conftest's one-block vit-micro-48


def test_a_new_format_is_exported_verified_and_run(dummy, ckpt, tmp_path):
    root = tmp_path / "artefacts"
    meta = export_verified(ckpt, root, "m", "dummy", "fp32", note="hello")
    art = artefact.artefact_dir(root, "m", "dummy", "fp32")
    assert meta["file"] == "model.dummy" and meta["dummy"] == {"note": "hello"}
    # verify found the static check through the table, then ran the artefact through the table's runtime
    assert meta["verification"]["dummy_static"] is True
    assert meta["verification"]["parity"]["runtime"] == "dummy"
    assert meta["verification"]["parity"]["max_abs_delta"] < 1e-5
    rt = runtimes.load(art)
    assert type(rt).__name__ == "DummyRuntime" and "dummy" in runtimes.runtimes()
    assert runtimes.available()["dummy"] is None
    # a model folder: its folder_rank puts it before the onnx artefact on a CPU
    export_artefact(ckpt, root, "m", "onnx", "fp32", optimize="off")
    cls, picked, _ = runtimes.resolve(root / "m")
    assert cls.name == "dummy" and picked == art
    # int8 is the quantiser's: the exporter's int8 is for the command line, the workflow never asks it
    assert "int8" in DUMMY.export_precisions and plan.export_precisions()["dummy"] == ("fp32",)
    with pytest.raises(ValueError, match="dummy-fp16 is not exported from a checkpoint"):
        export_artefact(ckpt, root, "m", "dummy", "fp16")


def test_a_new_format_reaches_the_quantiser_targets_and_plan(dummy, tmp_path):
    assert vitedge.quantize.backend_class("dummy").__name__ == "DummyBackend"
    assert "dummy" in artefact.int8_formats() and "dummy" in plan.quantize_formats()
    assert "dummy" in artefact.exported_formats() and "dummy" in targets.known_formats()
    target = tmp_path / "dummy.yaml"
    target.write_text(yaml.safe_dump({"name": "dummy", "entries": [
        {"name": "dummy", "artefacts": ["dummy-fp32", "dummy-int8"], "runtime": "dummy"}]}))
    assert targets.load_target(target).accepts("dummy", "int8")
    constraint = re.compile(f"(?:{plan.export_format_re()})")
    assert constraint.match("dummy-fp32/") and not constraint.match("dummy-int8/")
    assert "dummy" in plan.artefact_format_re().split("|")


def test_a_new_format_is_in_the_config_schema(dummy):
    pytest.importorskip("snakemake")
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    schema = plan.config_schema(SCHEMA_PATH)
    assert "dummy" in schema["$defs"]["export_format"]["enum"] and "dummy" in schema["$defs"]["int8_format"]["enum"]
    cfg = yaml.safe_load((REPO / "workflow" / "config.yaml").read_text())
    cfg["export"]["formats"] = ["onnx", "dummy"]
    cfg["quantize"]["formats"] = ["dummy"]
    with tempfile.TemporaryDirectory() as scratch:
        checked = copy.deepcopy(cfg)
        validate(checked, str(plan.write_config_schema(SCHEMA_PATH, scratch)))
        assert checked["export"]["dummy"] == {} and checked["quantize"]["dummy"] == {}  # its sections, filled in
        typo = copy.deepcopy(cfg)
        typo["quantize"]["dummy"] = {"calibraton": 8}
        with pytest.raises(WorkflowError):
            validate(typo, str(plan.write_config_schema(SCHEMA_PATH, scratch)))
    # and without the entry, no trace of it
    FORMAT_TABLE.pop("dummy")
    assert "dummy" not in str(plan.config_schema(SCHEMA_PATH))


def test_a_new_format_is_planned_by_the_workflow(dummy, tmp_path, monkeypatch):
    """snakemake itself (a dry run): the export rule builds dummy-fp32, the quantize rule dummy-int8,
    and the validation matrix has a row for each, from the table entry alone."""
    from test_workflow import copy_workflow, snakemake, tiny_config

    work = tmp_path / "wf"
    work.mkdir()
    copy_workflow(work)
    (dummy / "sitecustomize.py").write_text(SITECUSTOMIZE)  # the entry in snakemake's own python
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(dummy), os.environ.get("PYTHONPATH")])))
    target = work / "dummy.yaml"
    target.write_text(yaml.safe_dump({"name": "dummy", "entries": [
        {"name": "dummy", "artefacts": ["dummy-fp32", "dummy-int8"], "runtime": "dummy"}]}))
    cfg = tiny_config()
    cfg["export"]["formats"] = ["dummy"]
    cfg["quantize"]["formats"] = ["dummy"]
    cfg["validate"]["targets"] = [str(target)]
    (work / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(work, "all", "--dry-run", "--printshellcmds", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "--format dummy --precision fp32" in proc.stdout  # the export rule
    assert re.search(r"vitedge\.quantize .*--format dummy ", proc.stdout)  # the quantize rule
    for key in ("dummy-fp32", "dummy-int8"):
        assert f"validation/student-{key}@dummy.json" in proc.stdout
    assert "--format dummy --precision int8" not in proc.stdout  # int8 is the quantiser's
