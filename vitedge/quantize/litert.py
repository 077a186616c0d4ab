"""LiteRT int8 with Google's `ai-edge-quantizer`, on the float `.tflite` litert-torch converts.

Variants (the gate keeps the fastest that passes):

- `dynamic`: dynamic-range int8 (`recipe.dynamic_wi8_afp32`): int8 per-channel weights, float32
  activations that XNNPACK quantises per call, so fully-connected, conv and batch-matmul layers
  run int8 kernels without calibration. At batch 1 this is what makes int8 pay on a CPU.
- `static`: full-integer int8 (`recipe.static_wi8_ai8`): weights and activations int8, activation
  ranges calibrated (min/max) on the training images; model input and output are int8 (the
  runtime quantises/dequantises them with the tensors' own scale and zero point). For NPUs/DSPs
  and integer-only MCUs; on CPUs the int8 LayerNorm/Softmax/GELU it implies cost accuracy and
  XNNPACK does not run all of them.

Units for the float fallback are regexes over the tensor names, which litert-torch builds from
the torch module path (`.../Sequential_blocks/vitedge.model.Block_3/vitedge.model.Attention_attn/...`):
a unit kept in float gets ai-edge-quantizer's `no_quantize` for its scope.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.artefact import RuntimeUnavailable
from vitedge.batching import batches, map_batches
from vitedge.bench import available_cores
from vitedge.export.litert import HOW, check_host, convert_tflite, op_counts, quiet
from vitedge.quantize.core import Backend, Candidate, Predict, copy_file

RECIPES = {"dynamic": "dynamic_wi8_afp32", "static": "static_wi8_ai8"}


def unit_regex(unit: str) -> str:
    """A vitedge unit (`patch_embed`, `blocks.3.attn`, `head`) -> a regex over litert-torch tensor names."""
    end = r"(/|;|$)"
    if unit == "patch_embed":
        return r"_patch_embed" + end
    if unit == "head":
        return r"_(head(_dist)?|attn_pool)" + end  # sequence pooling belongs to the head
    m = re.fullmatch(r"blocks\.(\d+)\.(attn|mlp)", unit)
    if not m:
        raise ValueError(f"unknown unit '{unit}'")
    return rf"Block_{m.group(1)}/[^/;]*_{m.group(2)}" + end


def interpreter_predict(path: str | Path, threads: int) -> Predict:
    """A fixed-batch-1 `.tflite` (float or int8 I/O) as (N, C, H, W) float32 -> (N, classes) float32."""
    from ai_edge_litert.interpreter import Interpreter  # optional toolchain (the export extra)

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    (si, zi), (so, zo) = inp["quantization"], out["quantization"]

    def one(x: np.ndarray) -> np.ndarray:
        if inp["dtype"] != np.float32:
            lo, hi = np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max
            x = np.clip(np.round(x / si) + zi, lo, hi).astype(inp["dtype"])
        it.set_tensor(inp["index"], x)
        it.invoke()
        y = it.get_tensor(out["index"])
        return (y.astype(np.float32) - zo) * so if out["dtype"] != np.float32 else y.copy()

    return lambda x: map_batches(lambda part: one(np.ascontiguousarray(part, dtype=np.float32)), x, 1)


class LiteRTBackend(Backend):
    fmt = "litert"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        check_host()
        if importlib.util.find_spec("ai_edge_quantizer") is None:
            raise RuntimeUnavailable("litert int8", "ai-edge-quantizer is not installed", HOW)
        self.fp32 = convert_tflite(self.model, self.work / "fp32.tflite")
        self.threads = self.cfg.threads or available_cores()
        self.calibration: dict | None = None  # static ranges, calibrated once and reused by the fallback
        self.n_builds = 0

    def variants(self) -> list[str]:
        if self.cfg.variants:
            return list(self.cfg.variants)
        return {"auto": ["dynamic", "static"], "dynamic": ["dynamic"], "static": ["static"]}[self.cfg.method]

    def nodes(self, variant: str, units: tuple[str, ...]) -> list[str]:
        return [unit_regex(u) for u in units]

    def build(self, variant: str, exclude: tuple[str, ...]) -> Candidate:
        # optional toolchain: the litert extra
        from ai_edge_quantizer import quantizer, recipe
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
        from ai_edge_quantizer.qtyping import TFLOperationName

        if variant not in RECIPES:
            raise ValueError(f"unknown litert int8 variant '{variant}' (choose from {', '.join(RECIPES)})")
        qt = quantizer.Quantizer(str(self.fp32))
        qt.load_quantization_recipe(getattr(recipe, RECIPES[variant])())
        for unit in exclude:  # the latest matching scope wins in ai-edge-quantizer's recipe
            qt.update_quantization_recipe(regex=unit_regex(unit), operation_name=TFLOperationName.ALL_SUPPORTED,
                                          algorithm_key=AlgorithmName.NO_QUANTIZE)
        with quiet():
            if qt.need_calibration and self.calibration is None:
                data = [{"args_0": one} for one in batches(self.calib, 1)]
                self.calibration = qt.calibrate({"serving_default": data}, num_threads=1)
            result = qt.quantize(self.calibration if qt.need_calibration else None)
            path = self.work / f"q{self.n_builds}.tflite"
            result.export_model(str(path), overwrite=True)
        self.n_builds += 1
        return Candidate(variant, tuple(exclude), interpreter_predict(path, self.threads), payload=path)

    def reference(self) -> Predict:
        return interpreter_predict(self.fp32, self.threads)

    def save(self, cand: Candidate, art_dir: Path) -> tuple[str, dict[str, Any]]:
        copy_file(cand.payload, art_dir / "model.tflite")
        ops, partitions = op_counts(art_dir / "model.tflite")
        return "model.tflite", {"max_batch": 1, "static_batch": 1, "delegate": "XNNPACK (the interpreter's default)",
                                "converter": f"litert-torch {importlib.metadata.version('litert-torch')}",
                                "ops": ops, "xnnpack_partitions": partitions}

    def describe(self, variant: str) -> dict[str, Any]:
        if not variant:
            return {}
        d: dict[str, Any] = {"quantiser": f"ai-edge-quantizer {importlib.metadata.version('ai-edge-quantizer')} "
                                          f"recipe.{RECIPES.get(variant, variant)}",
                             "kind": variant, "weights": "int8 per-channel symmetric",
                             "run_with": "ai_edge_litert Interpreter (XNNPACK delegate), batch 1"}
        if variant == "dynamic":
            d["activations"] = "float32, quantised to int8 per call by the kernels (dynamic range)"
        else:
            d["activations"] = "int8, calibrated (min/max); model input and output int8 (full integer)"
            if self.cfg.calibrate_method != "minmax":
                d["note"] = f"calibrate_method {self.cfg.calibrate_method} not offered here: min/max used"
        return d

