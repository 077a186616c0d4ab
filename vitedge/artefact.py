"""The artefact contract: what export, quantize, runtimes and the workflow agree on.

This is the low module everything else stands on: it imports nothing from vitedge but `io`,
`sysinfo` and `preprocess`, and not torch, so the exporters, the quantisers, the runtimes and the
web server can all use it without importing each other.

It owns the contract: `read_meta` checks every meta.json against `check_meta` (types, required
keys, `classes` as long as the output, `file` a plain name inside the artefact folder, the
preprocessing's bounds, size and nesting depth) before anything uses it, since an artefact folder
is data from anywhere. A violation is an `ArtefactError` naming the field (`infer`: exit 3).

Words:
- a **checkpoint** is what training writes (`models/<name>.pt`, `vitedge.checkpoints`): weights,
  the model config and the preprocessing. Validation calls its fp32 row `checkpoint-fp32`.
- an **artefact** is an exported, deployable model: one folder per (model, format, precision),

    <root>/<model_name>/<format>-<precision>/
        <model file or dir>     as FORMAT_TABLE's `file` says (model.onnx, model.mlpackage/ ...)
        meta.json               written LAST: its presence means the artefact is complete
- a **format** is one entry of `FORMAT_TABLE`: its model file, the module that exports it, the
  quantiser backend that makes its int8, the runtime that runs it. Export, quantize, the runtimes,
  the workflow's rules and its config schema all read that table, so a new format is one entry
  there plus its own modules (tests/test_formats.py).

`meta.json` carries everything a runtime needs to use the model without the checkpoint: the
preprocessing, the class names, the input/output names and shapes, plus provenance (source
checkpoint and its hash, export time, machine, library versions).
"""
from __future__ import annotations

import importlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from vitedge.io import file_size, read_json, write_json
from vitedge.preprocess import Preprocess
from vitedge.sysinfo import library_versions, machine_info

PRECISIONS = ("fp32", "fp16", "int8")
CHECKPOINT = "checkpoint"  # the format word for a training checkpoint (.pt), which is not an artefact
CHECKPOINT_SUFFIXES = (".pt", ".pth")
CHECKPOINT_RUNTIME = "vitedge.runtimes.torch_rt:TorchRuntime"  # what runs a checkpoint (not in the table)
PROGRAM = "torch"  # the format of a saved torch.export program (.pt2), e.g. the quantiser's int8


@dataclass(frozen=True)
class FormatSpec:
    """One artefact format: all that export, quantize, the runtimes and the workflow know of it.

    Code is named by dotted path ("package.module" or "package.module:Name") and imported only when
    used (`load_object`), so this module stays torch-free and listing the formats loads no toolchain.
    """

    name: str
    # the model file (or folder) in the artefact folder, as its builders name it
    file: str
    # "module:Class" of the `vitedge.runtimes.base.Runtime` that runs it
    runtime: str
    # the module that builds it from a checkpoint (`vitedge.export`: `build`, optional `check_host`);
    # None: only the quantiser writes it
    exporter: str | None = None
    # what that exporter builds; where the format also has an `int8` backend, the workflow takes int8
    # from the quantiser (its accuracy gate) and the exporter's int8 is for the command line only
    export_precisions: tuple[str, ...] = ()
    # another format's artefact of the same precision the exporter converts (the workflow's input)
    built_from: str | None = None
    # whether exporting needs the GPU (a workflow resource, --gpus on SLURM)
    export_gpu: bool = False
    # "module:Class" of the quantiser's backend (`vitedge.quantize.core.Backend`): int8 with the gate
    int8: str | None = None
    # "module:function" `(art_dir, meta, model) -> dict` checking an artefact without running it, for
    # hosts its runtime does not run on (`vitedge.verify`)
    static_verify: str | None = None
    # device -> its place when `vitedge.runtimes.load` picks from a model folder (lower first); on a
    # device it does not name, the format is tried last
    folder_rank: Mapping[str, int] = field(default_factory=dict)


# THE format table: everything else derives from it (FORMATS below, vitedge.export.BUILDERS,
# vitedge.quantize.BACKENDS, which runtime runs what, the workflow's rules and config schema)
FORMAT_TABLE: dict[str, FormatSpec] = {spec.name: spec for spec in (
    # fp16 is emulated on CPUs (slower than fp32), so a folder's onnx-fp16 is skipped there (runtimes)
    FormatSpec("onnx", "model.onnx", "vitedge.runtimes.onnx_rt:OnnxRuntime", "vitedge.export.onnx",
               ("fp32", "fp16"), int8="vitedge.quantize.onnx:OnnxBackend", folder_rank={"cpu": 1, "cuda": 2}),
    # int8: converted from the quantiser's onnx-int8 (no backend of its own)
    FormatSpec("ort", "model.ort", "vitedge.runtimes.onnx_rt:OnnxRuntime", "vitedge.export.ort_format",
               ("fp32", "fp16", "int8"), built_from="onnx", folder_rank={"cpu": 2}),
    # XNNPACK has no fp16 path worth shipping on CPUs
    FormatSpec("executorch", "model.pte", "vitedge.runtimes.executorch_rt:ExecuTorchRuntime",
               "vitedge.export.executorch", ("fp32",), int8="vitedge.quantize.pt2e:ExecuTorchBackend",
               folder_rank={"cpu": 4}),
    # the exporter's int8 is weights only; the quantiser adds the accuracy gate. Off macOS it cannot
    # run, so its spec and weights are read back instead
    FormatSpec("coreml", "model.mlpackage", "vitedge.runtimes.coreml_rt:CoreMLRuntime", "vitedge.export.coreml",
               ("fp32", "fp16", "int8"), int8="vitedge.quantize.coreml:CoreMLBackend",
               static_verify="vitedge.export.coreml:verify", folder_rank={"cpu": 5}),
    # the engine is built for one GPU (vitedge.hosts.engine_file names it); int8 engines come from the
    # quantiser's Q/DQ ONNX, which stays the model file until a GPU host builds the engine
    FormatSpec("tensorrt", "model-<key>.engine", "vitedge.runtimes.trt_rt:TensorRTRuntime", "vitedge.export.tensorrt",
               ("fp32", "fp16"), export_gpu=True, int8="vitedge.quantize.onnx:TensorRTBackend",
               folder_rank={"cuda": 1}),
    # a saved torch.export program: only the quantiser writes one
    FormatSpec(PROGRAM, "model.pt2", "vitedge.runtimes.torch_rt:TorchRuntime",
               int8="vitedge.quantize.pt2e:TorchBackend"),
    FormatSpec("litert", "model.tflite", "vitedge.runtimes.litert_rt:LiteRTRuntime", "vitedge.export.litert",
               ("fp32",), int8="vitedge.quantize.litert:LiteRTBackend", folder_rank={"cpu": 3}),
)}
# the artefact formats when this module was imported; code that must see a format added at run time
# (tests/test_formats.py) reads FORMAT_TABLE itself
FORMATS = tuple(FORMAT_TABLE)

META = "meta.json"
META_VERSION = "vitedge-artefact/1"
INPUT_NAME, OUTPUT_NAME = "input", "logits"
DEFAULT_MAX_BATCH = 256
REQUIRED_KEYS = ("format", "precision", "file", "model_name", "source_checkpoint", "source_sha256", "config",
                 "preprocess", "classes", "input", "output", "size_bytes")

# bounds of a meta.json read from disk: the shipped ones are ~200 KB and 6 levels deep
MAX_META_BYTES = 16 << 20
MAX_META_DEPTH = 32
MAX_CLASSES = 10_000

FER_LICENSE = ("trained on FER-2013: research use only (the dataset's images come from the web "
               "with no redistribution or commercial licence)")


class ArtefactError(ValueError):
    """An artefact is missing, incomplete, or not what the caller asked for
    (meta.json absent, a .pte given to the ONNX runtime, an engine built for another GPU ...)."""


class RuntimeUnavailable(RuntimeError):
    """A runtime (or exporter toolchain) cannot run on this host. Says what is missing and how to get it."""

    def __init__(self, runtime: str, missing: str, how: str = ""):
        self.runtime, self.missing, self.how = runtime, missing, how
        super().__init__(f"{runtime} is not available: {missing}" + (f" ({how})" if how else ""))


def artefact_key(fmt: str, precision: str) -> str:
    """("onnx", "int8") -> "onnx-int8": how target files, folders and validation files name an artefact."""
    return f"{fmt}-{precision}"


def format_spec(fmt: str) -> FormatSpec:
    """The table's entry for `fmt`, or ValueError naming the formats there are."""
    if fmt not in FORMAT_TABLE:
        raise ValueError(f"unknown format '{fmt}'; choose from {', '.join(FORMAT_TABLE)}")
    return FORMAT_TABLE[fmt]


def exported_formats() -> tuple[str, ...]:
    """Formats built from a checkpoint (`vitedge.export`), in table order."""
    return tuple(f for f, spec in FORMAT_TABLE.items() if spec.exporter)


def int8_formats() -> tuple[str, ...]:
    """Formats the quantiser makes int8 artefacts of (`vitedge.quantize`), in table order."""
    return tuple(f for f, spec in FORMAT_TABLE.items() if spec.int8)


def runtime_path(fmt: str) -> str | None:
    """"module:Class" of the runtime that runs `fmt` artefacts (or checkpoints); None if none does."""
    if fmt == CHECKPOINT:
        return CHECKPOINT_RUNTIME
    spec = FORMAT_TABLE.get(fmt)
    return spec.runtime if spec else None


def load_object(path: str) -> Any:
    """"package.module:Name" -> that object; "package.module" -> the module. Imported now, on use."""
    module, _, name = path.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, name) if name else obj


def artefact_dir(root: str | Path, model_name: str, fmt: str, precision: str) -> Path:
    format_spec(fmt)  # ValueError for a format the table does not hold
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; choose from {', '.join(PRECISIONS)}")
    return Path(root) / model_name / artefact_key(fmt, precision)


def input_spec(cfg: dict[str, Any], max_batch: int | None = None) -> dict[str, Any]:
    """meta.json's `input` for a model config: NCHW float32 with a dynamic batch."""
    return {"name": INPUT_NAME, "shape": [-1, cfg["in_chans"], cfg["img_size"], cfg["img_size"]],
            "dtype": "float32", "max_batch": max_batch}


def write_meta(art_dir: str | Path, fmt: str, precision: str, file_name: str, info: dict[str, Any],
               export_seconds: float, **extra: Any) -> dict[str, Any]:
    """Write `<art_dir>/meta.json` (atomically) for the model file `file_name` and return it.

    `info` is what `vitedge.checkpoints.load_model` returned (plus `source_checkpoint`). `extra`
    adds format extras (e.g. `quantization={...}`, `engine_key={...}`); `model_name=` overrides the
    name taken from the directory layout; `max_batch=` records a fixed or bounded batch.
    """
    art_dir = Path(art_dir)
    model_file = art_dir / file_name
    if not model_file.exists():
        raise ArtefactError(f"cannot write {art_dir / META}: the model file {model_file} does not exist")
    cfg = info["config"]
    meta = {
        "schema": META_VERSION,
        "format": fmt,
        "precision": precision,
        "file": file_name,
        "model_name": extra.pop("model_name", art_dir.parent.name),
        "source_checkpoint": str(info.get("source_checkpoint", "")),
        "source_sha256": info.get("sha256", ""),
        "config": cfg,
        "preprocess": info["preprocess"],
        "classes": list(info["classes"]),
        "input": input_spec(cfg, extra.pop("max_batch", None)),
        "output": {"name": OUTPUT_NAME, "shape": [-1, cfg["num_classes"]]},
        "size_bytes": file_size(model_file),
        "export_seconds": round(float(export_seconds), 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "versions": library_versions(),
    }
    meta.update(extra)
    write_json(art_dir / META, meta)
    return meta


def update_meta(art_dir: str | Path, **fields: Any) -> dict[str, Any]:
    """Add fields (e.g. `parity`) to an existing meta.json, atomically."""
    meta = read_meta(art_dir)
    meta.update(fields)
    write_json(Path(art_dir) / META, meta)
    return meta


def find_artefact(path: str | Path) -> Path:
    """An artefact dir, its meta.json, or its model file -> the artefact dir."""
    path = Path(path)
    if path.name == META or (not path.is_dir() and (path.parent / META).is_file()):
        return path.parent
    return path


def read_meta(art_dir: str | Path) -> dict[str, Any]:
    """Read and check `<art_dir>/meta.json` (`check_meta`). `art_dir` may also be the model file or
    meta.json itself. Every problem is an ArtefactError of one line naming the field."""
    art_dir = find_artefact(art_dir)
    meta_path = art_dir / META
    if not art_dir.exists():
        raise ArtefactError(f"artefact not found: {art_dir}")
    if not meta_path.is_file():
        raise ArtefactError(f"{art_dir} is not a vitedge artefact: {META} is missing "
                            "(export it with `python -m vitedge.export`)")
    try:
        if meta_path.stat().st_size > MAX_META_BYTES:
            raise ArtefactError(f"{meta_path} is {meta_path.stat().st_size:,} bytes, over the {MAX_META_BYTES:,} "
                                "a meta.json may have")
        meta = read_json(meta_path)
    except RecursionError:
        raise ArtefactError(f"{meta_path}: nested deeper than {MAX_META_DEPTH} levels") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ArtefactError(f"cannot read {meta_path}: {one_line(exc)}") from None
    return check_meta(meta, art_dir, where=str(meta_path))


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message as one short line (library messages can span pages)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + " ..."


def _depth(obj: Any, limit: int) -> int:
    """Nesting depth of a JSON value, counted without recursion and stopping past `limit`."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def _expect(meta: dict[str, Any], key: str, kind: type, where: str, optional: bool = False) -> Any:
    """meta[key] if it is a `kind` (dict, list or str here; never a bool), else ArtefactError naming it."""
    value = meta.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind):
        shown = json.dumps(value)[:60] if _jsonable(value) else type(value).__name__
        raise ArtefactError(f"{where}: '{key}' must be a {kind.__name__}, got {shown}")
    return value


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError, RecursionError):
        return False


def _count(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_file_name(name: Any, art_dir: Path, where: str) -> Path:
    """`file` must be a plain name of an existing entry inside the artefact folder (no path, no link
    out of it): the web server serves it and the runtimes open it, so it must not reach elsewhere."""
    if not isinstance(name, str) or not name or name in (".", "..") or any(c in name for c in "/\\\0") \
            or len(name) > 255:
        raise ArtefactError(f"{where}: 'file' must be a plain file name inside the artefact folder, got "
                            f"{name!r}"[:300])
    path = art_dir / name
    if not path.exists():
        raise ArtefactError(f"{art_dir}: the model file '{name}' named in {META} is missing")
    try:
        path.resolve().relative_to(art_dir.resolve())
    except ValueError:
        raise ArtefactError(f"{where}: 'file' {name!r} leads outside the artefact folder (a link to "
                            f"{path.resolve()}); copy the model file into {art_dir}") from None
    return path


def _check_io(meta: dict[str, Any], pre: Preprocess, classes: list, where: str) -> None:
    """`input` [N, 1, S, S] at the preprocessing's size; `output` [N, len(classes)]."""
    inp, out = _expect(meta, "input", dict, where), _expect(meta, "output", dict, where)
    for key, spec in (("input", inp), ("output", out)):
        if not isinstance(spec.get("name"), str):
            raise ArtefactError(f"{where}: '{key}.name' must be a string")
    shape = inp.get("shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(_count(d, 1) for d in shape[1:])
            and (shape[0] == -1 or _count(shape[0], 1))):
        raise ArtefactError(f"{where}: 'input.shape' must be [-1 or batch, channels, height, width] of positive "
                            f"integers, got {str(shape)[:60]}")
    if shape[1] != 1 or shape[2:] != [pre.img_size, pre.img_size]:
        raise ArtefactError(f"{where}: 'input.shape' {shape} does not match the preprocessing (grayscale "
                            f"{pre.img_size}x{pre.img_size}: [-1, 1, {pre.img_size}, {pre.img_size}])")
    if not (inp.get("max_batch") is None or _count(inp.get("max_batch"), 1)):
        raise ArtefactError(f"{where}: 'input.max_batch' must be a positive integer or null")
    out_shape = out.get("shape")
    if not (isinstance(out_shape, list) and len(out_shape) == 2 and all(_count(d, 1) or d == -1 for d in out_shape)):
        raise ArtefactError(f"{where}: 'output.shape' must be [-1 or batch, classes], got {str(out_shape)[:60]}")
    if out_shape[1] != len(classes):
        raise ArtefactError(f"{where}: 'classes' names {len(classes)} classes but the output has {out_shape[1]}")


def _check_extras(meta: dict[str, Any], where: str) -> None:
    """The optional fields a runtime reads: the types it relies on."""
    for key in ("bs1_threads", "ort_session", "engine_key", "quantization", "coreml"):
        _expect(meta, key, dict, where, optional=True)
    if not (meta.get("static_batch") is None or _count(meta.get("static_batch"), 1)):
        raise ArtefactError(f"{where}: 'static_batch' must be a positive integer or null")
    best = (meta.get("bs1_threads") or {}).get("best")
    if not (best is None or _count(best, 1)):
        raise ArtefactError(f"{where}: 'bs1_threads.best' must be a positive integer")
    disabled = (meta.get("ort_session") or {}).get("disabled_optimizers", [])
    if not (isinstance(disabled, list) and all(isinstance(d, str) for d in disabled)):
        raise ArtefactError(f"{where}: 'ort_session.disabled_optimizers' must be a list of strings")


def check_meta(meta: Any, art_dir: str | Path, where: str = META) -> dict[str, Any]:
    """The artefact contract, checked: `meta` as read from `<art_dir>/meta.json`, or ArtefactError."""
    art_dir = Path(art_dir)
    if not isinstance(meta, dict):
        raise ArtefactError(f"{where} is not a JSON object (it is a {type(meta).__name__})")
    if _depth(meta, MAX_META_DEPTH) > MAX_META_DEPTH:
        raise ArtefactError(f"{where}: nested deeper than {MAX_META_DEPTH} levels")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ArtefactError(f"{where} is incomplete: missing {', '.join(missing)}")
    # a word here; whether a runtime runs it is FORMAT_TABLE's to say where it is loaded (`vitedge.runtimes`),
    # so a meta.json from a vitedge that knows more formats still reads
    if not (isinstance(meta["format"], str) and re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", meta["format"])):
        raise ArtefactError(f"{where}: 'format' must be a format name such as {', '.join(FORMAT_TABLE)}, "
                            f"got {str(meta['format'])[:40]!r}")
    if meta["precision"] not in PRECISIONS:
        raise ArtefactError(f"{where}: 'precision' must be one of {', '.join(PRECISIONS)}, "
                            f"got {str(meta['precision'])[:40]!r}")
    for key in ("model_name", "source_checkpoint", "source_sha256"):
        _expect(meta, key, str, where)
    _expect(meta, "config", dict, where)
    if not _count(meta["size_bytes"], 0):
        raise ArtefactError(f"{where}: 'size_bytes' must be a non-negative integer")
    try:
        pre = Preprocess.from_dict(meta["preprocess"])
    except ValueError as exc:
        raise ArtefactError(f"{where}: {exc}") from None
    classes = _expect(meta, "classes", list, where)
    if not 1 <= len(classes) <= MAX_CLASSES or not all(isinstance(c, str) and c for c in classes):
        raise ArtefactError(f"{where}: 'classes' must be a list of 1..{MAX_CLASSES} non-empty strings")
    _check_io(meta, pre, classes, where)
    _check_extras(meta, where)
    check_file_name(meta["file"], art_dir, where)
    return meta


def training_data(info: dict[str, Any]) -> dict[str, str]:
    """What the checkpoint was trained on, and the licence that implies for the artefacts.

    Read from the data manifest the training stage recorded (`meta.data` = the data folder).
    Unknown data is flagged rather than guessed; anything that is not the synthetic set is FER-2013.
    """
    meta = info.get("meta") or {}
    kind = meta.get("data_kind")
    if kind is None and meta.get("data"):
        try:
            kind = read_json(Path(meta["data"]) / "manifest.json")["source"]["kind"]
        except (OSError, ValueError, KeyError, TypeError):
            kind = None
    if kind is None:
        return {"kind": "unknown", "license": "training data unknown: check its licence before distributing"}
    if kind == "synthetic":
        return {"kind": kind, "license": "trained on vitedge's synthetic faces: Apache-2.0"}
    return {"kind": f"fer2013 ({kind})", "license": FER_LICENSE}
