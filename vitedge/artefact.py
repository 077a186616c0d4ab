"""The artefact contract: what export, quantize, runtimes and the workflow agree on.

This is the low module everything else stands on: it imports nothing from vitedge but `io`
and `sysinfo`, so the exporters, the quantisers and the runtimes can all use it without
importing each other.

Words:
- a **checkpoint** is what training writes (`models/<name>.pt`, `vitedge.checkpoints`): weights,
  the model config and the preprocessing. Validation calls its fp32 row `checkpoint-fp32`.
- an **artefact** is an exported, deployable model: one folder per (model, format, precision),

    <root>/<model_name>/<format>-<precision>/
        <model file or dir>     model.onnx | model.ort | model.pte | model.mlpackage/ | model-<key>.engine
                                | model.tflite | model.pt2 (format "torch": a saved torch.export program)
        meta.json               written LAST: its presence means the artefact is complete

`meta.json` carries everything a runtime needs to use the model without the checkpoint: the
preprocessing, the class names, the input/output names and shapes, plus provenance (source
checkpoint and its hash, export time, machine, library versions).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vitedge.io import file_size, read_json, write_json
from vitedge.sysinfo import library_versions, machine_info

# the one list of artefact formats and precisions (the workflow and its schema check against these)
FORMATS = ("onnx", "ort", "executorch", "coreml", "tensorrt", "torch", "litert")
PRECISIONS = ("fp32", "fp16", "int8")
CHECKPOINT = "checkpoint"  # the format word for a training checkpoint (.pt), which is not an artefact
CHECKPOINT_SUFFIXES = (".pt", ".pth")
PROGRAM = "torch"  # the format of a saved torch.export program (.pt2), e.g. the quantiser's int8

META = "meta.json"
META_VERSION = "vitedge-artefact/1"
INPUT_NAME, OUTPUT_NAME = "input", "logits"
DEFAULT_MAX_BATCH = 256
REQUIRED_KEYS = ("format", "precision", "file", "model_name", "source_checkpoint", "source_sha256", "config",
                 "preprocess", "classes", "input", "output", "size_bytes")

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


def artefact_dir(root: str | Path, model_name: str, fmt: str, precision: str) -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format '{fmt}'; choose from {', '.join(FORMATS)}")
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
    """Read and check `<art_dir>/meta.json`. `art_dir` may also be the model file or meta.json itself."""
    art_dir = find_artefact(art_dir)
    meta_path = art_dir / META
    if not art_dir.exists():
        raise ArtefactError(f"artefact not found: {art_dir}")
    if not meta_path.is_file():
        raise ArtefactError(f"{art_dir} is not a vitedge artefact: {META} is missing "
                            "(export it with `python -m vitedge.export`)")
    try:
        meta = read_json(meta_path)
    except (OSError, ValueError) as exc:
        raise ArtefactError(f"cannot read {meta_path}: {exc}") from exc
    if not isinstance(meta, dict):
        raise ArtefactError(f"{meta_path} is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ArtefactError(f"{meta_path} is incomplete: missing {', '.join(missing)}")
    if not (art_dir / meta["file"]).exists():
        raise ArtefactError(f"{art_dir}: the model file '{meta['file']}' named in {META} is missing")
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
