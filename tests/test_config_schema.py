"""workflow/schemas/config.schema.yaml: it refuses typos anywhere, holds every default the rules read,
and spells formats, precisions and stage fields exactly as the package does.

The schema is checked as the Snakefile checks it: Snakemake's own `validate` (which also fills in
defaults) on the file with the format table's words put in (`vitedge.plan.config_schema`); two
tests run snakemake itself on a copy of the workflow (a typo stops `snakemake -n`; the linter is
clean on the tests' tiny config).
"""
from __future__ import annotations

import copy
import dataclasses
import re
import tempfile
from pathlib import Path

import pytest
import yaml

pytest.importorskip("snakemake")
from snakemake.exceptions import WorkflowError  # noqa: E402
from snakemake.utils import validate  # noqa: E402

from vitedge.artefact import FORMATS, PRECISIONS, PROGRAM  # noqa: E402
from vitedge.plan import config_schema, write_config_schema  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = config_schema(SCHEMA_PATH)  # what the Snakefile validates against
DEFS = SCHEMA["$defs"]
PROPS = SCHEMA["properties"]
DEFAULT_CONFIG = yaml.safe_load((REPO / "workflow" / "config.yaml").read_text())


def checked(cfg: dict) -> dict:
    """`cfg` validated as the Snakefile validates it (defaults filled in); WorkflowError if refused."""
    cfg = copy.deepcopy(cfg)
    with tempfile.TemporaryDirectory() as scratch:
        validate(cfg, str(write_config_schema(SCHEMA_PATH, scratch)))
    return cfg


def merged(base: dict, over: dict) -> dict:
    """What `--configfile over` makes of the default config: nested dicts merged, the rest replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def field_names(cls, *leave_out: str) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} - set(leave_out)


# --------------------------------------------------------------------------- no silent typos
TYPOS = [
    (("finetune", "epocs"), 50),
    (("pretrain", "epocs"), 1),
    (("distill", "alpah"), 0.5),
    (("quantize", "max_dorp"), 1.0),
    (("quantize", "onnx", "calibraton"), 64),
    (("export", "onnx", "opsett"), 17),
    (("export", "tensorrt", "wen"), "auto"),
    (("models", "student", "overrides", "distiled"), True),
    (("models", "teacher", "overrides", "embed_dim"), 64),  # a ViT field on the CNN teacher
    (("models", "student", "preprocess", "meen"), 0.5),
    (("validate", "budgets", "max_drop_pts"), 1.0),
    (("validate", "budgets", "max_accuracy_drop"), 0.02),  # the old name (a fraction): refused, not misread
    (("validate", "budgets", "by_precision", "int8", "min_agrement"), 0.9),
    (("validate", "budgets", "by_precision", "int4"), {}),
    (("validate", "gates"), {}),
    (("validate", "bench", "max_second"), 1.0),
    (("data", "per_clas"), 10),
    (("compute", "nproc"), 2),
    (("report", "titel"), "x"),
    (("quantise",), {}),
]


@pytest.mark.parametrize("path, value", TYPOS, ids=[".".join(p) for p, _ in TYPOS])
def test_a_typo_anywhere_is_refused_by_name(path, value):
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    node = cfg
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    with pytest.raises(WorkflowError) as err:
        checked(cfg)
    assert f"'{path[-1]}'" in str(err.value)


@pytest.mark.parametrize("path, value", [
    (("models", "student", "preset"), "cnn-tiny-48"),  # a CNN preset under arch vit
    (("export", "formats"), ["onnx-int4"]),
    (("export", "formats"), [{"format": "torch"}]),  # .pt2 programs come from the quantiser only
    (("quantize", "formats"), ["ort"]),  # no int8 backend: ort-int8 converts the onnx-int8 artefact
])
def test_values_outside_the_lists_are_refused(path, value):
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(WorkflowError):
        checked(cfg)


# --------------------------------------------------------------------------- defaults live in the schema
def test_shipped_configs_are_valid():
    checked(DEFAULT_CONFIG)
    for path in sorted((REPO / "workflow" / "config").glob("*.yaml")):
        checked(merged(DEFAULT_CONFIG, yaml.safe_load(path.read_text())))


def test_the_schema_fills_in_what_the_rules_read():
    minimal = {"run": "x", "data": {"source": "synthetic"},
               "models": {"teacher": {"arch": "cnn", "preset": "cnn-tiny-48"}, "student": {"preset": "vit-nano-48"}},
               "pretrain": {"method": "none"}, "finetune": {}, "distill": {}}
    cfg = checked(minimal)
    assert cfg["data"] == {"source": "synthetic", "per_class": 600, "seed": 0}
    assert cfg["compute"] == {"device": "auto", "nproc_per_node": 1}
    assert cfg["models"]["student"] == {"preset": "vit-nano-48", "arch": "vit", "overrides": {}}
    assert cfg["finetune"] == {"augment": "strong"}
    assert cfg["distill"] == {"distillation_type": "hard", "alpha": 0.5, "tau": 1.0}
    q = cfg["quantize"]
    assert q["models"] == ["student"] and q["formats"] == ["onnx", "torch", "executorch", "coreml"]
    assert all(q[f] == {} for f in DEFS["int8_format"]["enum"])
    e = cfg["export"]
    assert e["models"] == ["student"] and e["formats"] == ["onnx", "ort", "executorch", "coreml-fp16", "tensorrt-fp16"]
    assert e["tensorrt"] == {"when": "auto"}
    assert all(e[f] == {} for f in DEFS["export_format"]["enum"] if f != "tensorrt")
    assert cfg["validate"] == {"targets": ["cpu", "gpu", "mobile"], "budgets": {}, "bench": {}, "limit": 0,
                               "peers": ["fer"]}
    assert cfg["report"] == {"title": "vitedge validation report: {run}"}


def test_no_defaults_in_the_rules():
    """The rules read the config plainly: no .get(key, default) / setdefault of their own."""
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        text = path.read_text()
        assert "setdefault(" not in text, path
        assert not re.search(r"\.get\([^()]*,", text), (path, "a .get(key, default)")
        assert not re.search(r"config\.get\(", text), path


# --------------------------------------------------------------------------- one list of words
def enums_outside_defs(node, where="properties"):
    """(where, enum) of every enum outside $defs."""
    if isinstance(node, dict):
        if "enum" in node:
            yield where, node["enum"]
        for k, v in node.items():
            yield from enums_outside_defs(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from enums_outside_defs(v, f"{where}[{i}]")


def test_the_schema_file_holds_no_list_of_formats_or_precisions():
    """The words come from vitedge.artefact.FORMAT_TABLE (vitedge.plan.config_schema), never the file."""
    raw = yaml.safe_load(SCHEMA_PATH.read_text())
    words = set(FORMATS) | set(PRECISIONS)
    assert not [(where, enum) for where, enum in enums_outside_defs(raw, "schema") if words & set(enum)]
    assert not {"precision", "export_format", "int8_format"} & {k for k, v in raw["$defs"].items() if "enum" in v}
    assert not words & set(raw["properties"]["quantize"]["properties"])  # per-format sections: put in
    assert "pattern" not in raw["properties"]["export"]["properties"]["formats"]["items"]["oneOf"][0]
    assert "properties" not in raw["properties"]["validate"]["properties"]["budgets"]["properties"]["by_precision"]


def test_formats_and_precisions_are_vitedges():
    from vitedge.quantize import BACKENDS

    assert DEFS["precision"]["enum"] == list(PRECISIONS)
    assert sorted(DEFS["int8_format"]["enum"]) == sorted(BACKENDS)  # a dict: its order says nothing
    # exported from a checkpoint: every artefact format but the quantiser's .pt2 program
    assert DEFS["export_format"]["enum"] == [f for f in FORMATS if f != PROGRAM]
    assert set(BACKENDS) <= set(FORMATS)
    # no format or precision list of its own anywhere else in the schema
    words = set(FORMATS) | set(PRECISIONS)
    inline = [(where, enum) for where, enum in enums_outside_defs(PROPS) if words & set(enum)]
    assert not inline, inline
    # export.formats strings: <export format>[-<precision>]
    pattern = PROPS["export"]["properties"]["formats"]["items"]["oneOf"][0]["pattern"]
    assert pattern == f"^({'|'.join(DEFS['export_format']['enum'])})(-({'|'.join(PRECISIONS)}))?$"
    # per-format sections: one per int8 backend / exported format, one budget per precision
    layout = {"models", "formats"}
    assert set(PROPS["quantize"]["properties"]) - layout == set(BACKENDS)
    assert set(PROPS["export"]["properties"]) - layout == set(DEFS["export_format"]["enum"])
    by_precision = PROPS["validate"]["properties"]["budgets"]["properties"]["by_precision"]
    assert list(by_precision["properties"]) == list(PRECISIONS)


def test_stage_and_model_fields_are_the_dataclasses():
    from vitedge.bench import BenchConfig
    from vitedge.cnn import PRESETS as CNN_PRESETS
    from vitedge.cnn import CNNConfig
    from vitedge.distill import DistillConfig
    from vitedge.model import PRESETS as VIT_PRESETS
    from vitedge.model import ViTConfig
    from vitedge.preprocess import Preprocess
    from vitedge.pretrain import PretrainConfig
    from vitedge.quantize import QuantizeConfig
    from vitedge.engine import TrainConfig
    from vitedge.validation_rows import Budgets, Limits

    train = set(DEFS["train"]["properties"])
    assert train == field_names(TrainConfig)
    assert train | set(PROPS["pretrain"]["properties"]) == field_names(PretrainConfig)
    assert set(PROPS["finetune"]["properties"]) <= train
    assert train | set(PROPS["distill"]["properties"]) == field_names(DistillConfig)
    assert set(DEFS["quantize_options"]["properties"]) == field_names(QuantizeConfig)
    assert set(PROPS["validate"]["properties"]["bench"]["properties"]) == field_names(BenchConfig)
    # validate.budgets: one precision's limits, and the defaults with the per-precision overrides
    assert set(DEFS["budget_fields"]["properties"]) == field_names(Limits)
    budgets = PROPS["validate"]["properties"]["budgets"]
    assert set(DEFS["budget_fields"]["properties"]) | set(budgets["properties"]) == field_names(Budgets)
    assert set(DEFS["vit_overrides"]["properties"]) == field_names(ViTConfig)
    assert set(DEFS["cnn_overrides"]["properties"]) == field_names(CNNConfig, "arch")  # arch: the model's own key
    assert set(DEFS["model"]["properties"]["preprocess"]["properties"]) == field_names(Preprocess, "img_size")
    assert set(DEFS["model"]["then"]["properties"]["preset"]["enum"]) == set(CNN_PRESETS)
    assert set(DEFS["model"]["else"]["properties"]["preset"]["enum"]) == set(VIT_PRESETS)


def test_every_object_refuses_unknown_keys():
    """additionalProperties: false on every object with properties (unevaluatedProperties: false where
    the object combines $ref with its own properties); the $defs such objects build on are exempt."""
    open_defs = {"train", "quantize_options", "budget_fields"}  # completed where they are used

    def walk(node, where):
        if isinstance(node, dict):
            if "properties" in node and not where.endswith((".if", *(f"$defs.{d}" for d in open_defs))):
                closed = node.get("additionalProperties") is False or node.get("unevaluatedProperties") is False
                in_branch = where.endswith((".then", ".else"))  # the model object itself is closed
                assert closed or in_branch, where
            for k, v in node.items():
                walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    assert SCHEMA.get("additionalProperties") is False
    walk(PROPS, "properties")
    walk(DEFS, "$defs")


# --------------------------------------------------------------------------- snakemake itself
def test_snakemake_stops_on_a_typo_before_running_anything(tmp_path):
    from test_workflow import copy_workflow, snakemake, tiny_config

    copy_workflow(tmp_path)
    cfg = tiny_config()
    cfg["finetune"] = {"epocs": 50}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "all", "--dry-run", timeout=300)
    assert proc.returncode != 0
    assert "epocs" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "results").exists()


def test_snakemake_lint_is_clean_on_the_tiny_config(tmp_path):
    from test_workflow import copy_workflow, snakemake, tiny_config

    copy_workflow(tmp_path)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_config()))
    proc = snakemake(tmp_path, "--lint", timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
