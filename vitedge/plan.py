"""The workflow's view of the format table: which rule builds which artefact, the rules' wildcard
constraints, and the config schema with the table's words put in.

The Snakefile and workflow/rules/plan.smk read these rather than lists of their own, and they live
here rather than in the .smk files so that tests see exactly what the workflow sees
(tests/test_formats.py adds a format to `vitedge.artefact.FORMAT_TABLE` and checks each of them).

The schema file (workflow/schemas/config.schema.yaml) holds no format or precision list:
`config_schema` fills in the `$defs` enums, the `export.formats` pattern, one `quantize.<format>`
section per int8 format, an empty `export.<format>` section for an exported format whose exporter
takes no options, and one `validate.budgets.by_precision` budget per precision.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vitedge.artefact import CHECKPOINT, FORMAT_TABLE, PRECISIONS, int8_formats
from vitedge.io import write_json

# the keys of `export` and `quantize` beside their per-format sections
LAYOUT = ("models", "formats")
SCHEMA_FILE = "config.schema.json"


def export_precisions() -> dict[str, tuple[str, ...]]:
    """{format: the precisions the export rule builds from a checkpoint}: the exporter's, less int8
    wherever the quantiser makes the format's int8 (with its accuracy gate). ort keeps int8: it
    converts the quantiser's onnx-int8, having no backend of its own."""
    return {f: tuple(p for p in spec.export_precisions if not (p == "int8" and spec.int8))
            for f, spec in FORMAT_TABLE.items() if spec.exporter}


def quantize_formats() -> tuple[str, ...]:
    """The formats the quantize rule makes int8 artefacts of; also the per-format keys of `quantize`."""
    return int8_formats()


def export_format_re() -> str:
    """The export rule's {fmt} constraint: a format only where the precision after it is one it is
    exported in (onnx-int8 is the quantiser's): "onnx(?=-(?:fp32|fp16)/)|ort(?=-(?:fp32|fp16|int8)/)|..."."""
    return "|".join(f"{f}(?=-(?:{'|'.join(ps)})/)" for f, ps in export_precisions().items() if ps)


def artefact_format_re() -> str:
    """The validate rule's {fmt} constraint: every format, and the training checkpoint."""
    return "|".join((*FORMAT_TABLE, CHECKPOINT))


def export_input(fmt: str) -> str | None:
    """The format whose artefact of the same precision the export rule needs first (ort: onnx), or None."""
    return FORMAT_TABLE[fmt].built_from


def export_gpu(fmt: str) -> int:
    """The export rule's `gpu` resource for `fmt` (TensorRT builds its engine on the GPU)."""
    return int(FORMAT_TABLE[fmt].export_gpu)


def _format_sections(props: dict[str, Any], wanted: tuple[str, ...], where: str) -> dict[str, Any]:
    """The per-format sections of `export` / `quantize` as the file has them, refusing one for a
    format the table does not list there (a stale section would accept options nothing reads)."""
    stale = set(props["properties"]) - set(LAYOUT) - set(wanted)
    if stale:
        raise ValueError(f"config schema: {where} has sections for {sorted(stale)}, which vitedge.artefact."
                         f"FORMAT_TABLE does not list there ({', '.join(wanted)})")
    return props["properties"]


def config_schema(path: str | Path) -> dict[str, Any]:
    """The config schema at `path` (YAML) with the format table's words put in (module docstring)."""
    schema = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    defs, props = schema["$defs"], schema["properties"]
    exported, int8 = tuple(export_precisions()), quantize_formats()
    defs["precision"]["enum"] = list(PRECISIONS)
    defs["export_format"]["enum"] = list(exported)
    defs["int8_format"]["enum"] = list(int8)
    export = _format_sections(props["export"], exported, "export")
    export["formats"]["items"]["oneOf"][0]["pattern"] = f"^({'|'.join(exported)})(-({'|'.join(PRECISIONS)}))?$"
    for fmt in exported:  # an exporter without options still gets its (empty, closed) section
        export.setdefault(fmt, {"type": "object", "description": f"{fmt} takes no export options",
                                "additionalProperties": False, "default": {}})
    quantize = _format_sections(props["quantize"], int8, "quantize")
    quantize.update({fmt: {"$ref": "#/$defs/quantize_format", "default": {}} for fmt in int8})
    by_precision = props["validate"]["properties"]["budgets"]["properties"]["by_precision"]
    by_precision["properties"] = {p: {"$ref": "#/$defs/budget"} for p in PRECISIONS}
    return schema


def write_config_schema(path: str | Path, folder: str | Path) -> Path:
    """`config_schema(path)` written into `folder` as JSON, for `snakemake.utils.validate` (which
    reads a file); returns the file's path."""
    dest = Path(folder) / SCHEMA_FILE
    write_json(dest, config_schema(path))
    return dest
