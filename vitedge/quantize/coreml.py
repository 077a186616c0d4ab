"""Core ML int8: per-channel symmetric int8 weights with `coremltools.optimize.coreml`.

The fp16 ML program is converted once (`vitedge.export.coreml.convert_coreml`); each candidate
is `linear_quantize_weights` with the fallback's units left fp16 through `op_name_configs`
(keyed by the weight constants' names, `p_model_blocks_0_attn_qkv_weight_to_fp16` ...).

Gating without a Mac: Core ML predicts only on macOS, so a candidate is evaluated by reading
its weights back from the package (dequantised, exactly what the device multiplies with) into
the PyTorch model and running that. Activations then run in fp32 rather than the device's fp16,
which the fp16 export's own check covers. On macOS the saved package is also re-checked
through the Core ML runtime.

Activations: coremltools 8+ has `optimize.coreml.experimental.linear_quantize_activations`
(W8A8), but it calibrates by running the model through Core ML, i.e. only on macOS, and the
Neural Engine gains from it mainly on A17 Pro / M4 and later. Not offered here: with no Mac to
calibrate and validate on, it would be an unchecked artefact. Timing likewise needs a device.
"""
from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import torch

from vitedge.export.coreml import (
    MIN_WEIGHT,
    artefact_extras,
    convert_coreml,
    ops,
    quantize_weights,
    read_program,
    read_weights,
    save_mlpackage,
)
from vitedge.hosts import is_macos
from vitedge.io import atomic_path
from vitedge.quantize.core import Backend, Candidate, torch_predict

MIL_PREFIX = "p_model_"  # what torch.export calls our wrapper's parameters (see vitedge.export.coreml)


def const_unit(name: str, depth: int) -> str | None:
    """'p_model_blocks_3_mlp_fc1_weight_to_fp16' -> 'blocks.3.mlp'; embeddings -> patch_embed."""
    stem = name.removeprefix(MIL_PREFIX)
    if stem.startswith(("patch_embed", "pos_embed", "cls_token", "dist_token")):
        return "patch_embed"
    if stem.startswith(("head", "attn_pool")):  # sequence pooling belongs to the head unit
        return "head"
    for i in range(depth):
        for part in ("attn", "mlp"):
            if stem.startswith(f"blocks_{i}_{part}_"):
                return f"blocks.{i}.{part}"
    return None


class CoreMLBackend(Backend):
    fmt = "coreml"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.runs_here = is_macos()
        self.fp16 = convert_coreml(self.model, self.info, "fp16", self.cfg.deployment_target)
        path = save_mlpackage(self.fp16, self.work / "fp16.mlpackage")
        _, program = read_program(path)
        depth = self.info["config"]["depth"]
        self.consts = {op.name: const_unit(op.name, depth) for op in ops(program)
                       if op.op_type == "const" and getattr(op.outputs[0].val, "size", 0) >= MIN_WEIGHT}
        self.min_weight = MIN_WEIGHT
        self.n_builds = 0

    def variants(self) -> list[str]:
        return list(self.cfg.variants) or ["weights"]

    def build(self, variant: str, exclude: tuple[str, ...]) -> Candidate:
        if variant != "weights":
            raise ValueError(f"unknown Core ML int8 variant '{variant}' (weights; W8A8 needs macOS, see module docs)")
        mlmodel = quantize_weights(self.fp16, keep_float=self.nodes(variant, exclude))
        mlmodel.user_defined_metadata["vitedge.precision"] = "int8"
        mlmodel.short_description = self.fp16.short_description.replace("fp16", "int8")
        path = save_mlpackage(mlmodel, self.work / f"q{self.n_builds}.mlpackage")
        self.n_builds += 1
        # emulate on any OS: the package's own (dequantised) weights in the PyTorch model
        weights = read_weights(read_program(path)[1])
        emulated = copy.deepcopy(self.model)
        with torch.no_grad():
            for name, p in emulated.named_parameters():
                w = weights.get(MIL_PREFIX + name.replace(".", "_"))
                if w is not None and w.shape == tuple(p.shape):
                    p.copy_(torch.from_numpy(w))
        return Candidate(variant, tuple(exclude), torch_predict(emulated), payload=path)

    def nodes(self, variant: str, units: tuple[str, ...]) -> list[str]:
        return [name for name, unit in self.consts.items() if unit in units]

    def fast(self, cand: Candidate):
        return None  # Core ML timings need an Apple device

    def save(self, cand: Candidate, art_dir: Path) -> tuple[str, dict[str, Any]]:
        with atomic_path(art_dir / "model.mlpackage") as tmp:
            shutil.copytree(cand.payload, tmp)
        extras = artefact_extras("fp16", self.cfg.deployment_target)  # the quantiser writes its own record
        return "model.mlpackage", extras

    def describe(self, variant: str) -> dict[str, Any]:
        import coremltools  # optional toolchain (the export extra)

        return {"quantiser": f"coremltools {coremltools.__version__} optimize.coreml.linear_quantize_weights",
                "weights": f"int8 per-channel symmetric (tensors >= {self.min_weight} elements)",
                "activations": "fp16 (W8A8 via linear_quantize_activations calibrates through Core ML: macOS only)",
                "evaluated_with": "weights read back from the .mlpackage into PyTorch (fp32 activations)",
                "run_with": "Core ML (iOS 16+/macOS 13+)"}
