"""ONNX -> ORT format (`.ort`), the flatbuffer model that ONNX Runtime Mobile loads.

Uses onnxruntime's own converter (`onnxruntime.tools.convert_onnx_models_to_ort`), with
graph optimisations fixed at conversion time for ARM (the x86-only NCHWc layout transform
is left out so the file runs on phones). The converter also writes
`required_operators.config`: keep it beside the model, it is the input for building a
size-reduced ONNX Runtime Mobile with only the operators this model needs.
"""
from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path

from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

from vitedge.artefact import ArtefactError, read_meta
from vitedge.export.onnx import export_onnx
from vitedge.io import atomic_path

OPS_CONFIG = "required_operators.config"


def convert_to_ort(onnx_path: str | Path, ort_path: str | Path, target_platform: str = "arm") -> Path:
    """Convert one .onnx file to `ort_path`; the operator config lands beside it. Returns ort_path."""
    onnx_path, ort_path = Path(onnx_path), Path(ort_path)
    with tempfile.TemporaryDirectory(dir=ort_path.parent if ort_path.parent.exists() else None) as work:
        work_dir = Path(work)
        src = work_dir / "src" / "model.onnx"
        src.parent.mkdir()
        shutil.copyfile(onnx_path, src)  # the converter converts every .onnx in a folder: give it only ours
        # the converter prints progress on stdout; keep CLI output (e.g. --json) clean
        with contextlib.redirect_stdout(io.StringIO()):
            convert_onnx_models_to_ort(src, output_dir=work_dir / "out",
                                       optimization_styles=[OptimizationStyle.Fixed],
                                       target_platform=target_platform)
        converted = sorted((work_dir / "out").glob("*.ort"))
        if len(converted) != 1:
            raise RuntimeError(f"ORT conversion of {onnx_path} produced {len(converted)} models")
        ops = sorted((work_dir / "out").glob("*.config"))
        with atomic_path(ort_path) as tmp:
            shutil.copyfile(converted[0], tmp)
        if ops:
            with atomic_path(ort_path.parent / OPS_CONFIG) as tmp:
                shutil.copyfile(ops[0], tmp)
    return ort_path


def build(model, info: dict, art_dir: Path, precision: str, target_platform: str = "arm",
          **_: object) -> tuple[str, dict]:
    """The `ort-<precision>` artefact, converted from the sibling `onnx-<precision>` artefact when it
    exists and was exported from the same checkpoint (so .onnx and .ort are the same model);
    otherwise from a fresh fp32/fp16 ONNX export."""
    sibling = art_dir.parent / f"onnx-{precision}"
    try:
        onnx_meta = read_meta(sibling)
        if onnx_meta["source_sha256"] != info.get("sha256"):
            raise ArtefactError(f"{sibling} was exported from another checkpoint")
    except ArtefactError as exc:
        if precision == "int8":
            raise ArtefactError(f"int8 ORT is converted from the quantiser's ONNX ({sibling}), which is not usable: "
                                f"{exc}. Run `python -m vitedge.quantize` first") from exc
        onnx_meta = None
    extras: dict = {"target_platform": target_platform, "ops_config": OPS_CONFIG}
    if onnx_meta is not None:
        convert_to_ort(sibling / onnx_meta["file"], art_dir / "model.ort", target_platform)
        extras["source_onnx"] = str(sibling)
        if "quantization" in onnx_meta:
            extras["quantization"] = onnx_meta["quantization"]
    else:
        with tempfile.TemporaryDirectory() as work:
            onnx_path = export_onnx(model, Path(work) / "model.onnx", info, fp16=precision == "fp16")
            convert_to_ort(onnx_path, art_dir / "model.ort", target_platform)
    return "model.ort", extras
