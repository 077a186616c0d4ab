"""PyTorch 2 Export (PT2E) int8, for two deployments that share the flow:

    export_program(model) -> prepare_pt2e(quantizer) -> calibrate -> convert_pt2e

- `TorchBackend` (`torch-int8`): torchao's `X86InductorQuantizer` (u8 activations, s8
  per-channel weights: the VNNI/AMX kernels' format), saved with `torch.export.save` as a
  `.pt2` program. It is a reference graph of quantize/dequantize ops: run eagerly it is *slower*
  than fp32; Inductor fuses it into int8 kernels, so deploy it as
      m = torch.export.load("model.pt2").module()
      torch._inductor.config.freezing = True; m = torch.compile(m)
  and that is how it is timed here (`quantize.compile`; off: timed eagerly, and says so).
- `ExecuTorchBackend` (`executorch-int8`): `XNNPACKQuantizer` (symmetric int8, per-channel
  weights; `dynamic` = int8 weights with activations quantised per call, `static` = calibrated
  activations too), re-exported at batch 1 and lowered with `vitedge.export.executorch.lower_to_pte`.
  Lowering takes tens of seconds, so candidates are gated on the converted PT2E graph (the same
  integer grid, run in PyTorch) and only the variants that pass are lowered, timed and checked.

Units stay float by quantising only the modules of the other units (both quantizers annotate
by module name; a `None` config is not accepted by XNNPACK's).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch._inductor.config as inductor_config

from vitedge.artefact import DEFAULT_MAX_BATCH
from vitedge.batching import map_batches
from vitedge.export.common import example_input, export_program
from vitedge.export.executorch import lower_to_pte
from vitedge.io import atomic_path
from vitedge.quantize.core import Backend, Candidate, Predict, copy_file, torch_predict, unit_modules


class PT2EBackend(Backend):
    """prepare / calibrate / convert for any PT2E quantizer; subclasses pick the quantizer and the saving."""

    kinds: tuple[str, ...] = ("dynamic", "static")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)

        self.graph = export_program(self.model).module()  # dynamic batch: calibrate and gate in batches

    def variants(self) -> list[str]:
        if self.cfg.variants:
            return list(self.cfg.variants)
        return {"auto": list(self.kinds), "dynamic": ["dynamic"], "static": ["static"]}[self.cfg.method]

    def quantizer(self, variant: str, modules: list[str]):
        raise NotImplementedError

    def build(self, variant: str, exclude: tuple[str, ...]) -> Candidate:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e  # optional toolchain

        if variant not in self.kinds:
            raise ValueError(f"unknown {self.fmt} int8 variant '{variant}' (choose from {', '.join(self.kinds)})")
        modules = [m for u in self.units(variant) if u not in exclude for m in unit_modules(self.model, u)]
        prepared = prepare_pt2e(copy.deepcopy(self.graph), self.quantizer(variant, modules))
        with torch.no_grad():
            map_batches(torch_predict(prepared), self.calib, 64)  # observers see the calibration images
        converted = convert_pt2e(prepared)
        return Candidate(variant, tuple(exclude), torch_predict(converted), payload=converted)

    def reexport(self, converted: torch.nn.Module, dynamic: bool = True) -> torch.export.ExportedProgram:
        x = example_input(self.model, 2 if dynamic else 1)
        shapes = ({0: torch.export.Dim("batch", min=1, max=DEFAULT_MAX_BATCH)},) if dynamic else None
        with torch.no_grad():
            return torch.export.export(converted, (x,), dynamic_shapes=shapes)


class TorchBackend(PT2EBackend):
    fmt = "torch"
    kinds = ("static", "dynamic")

    def quantizer(self, variant: str, modules: list[str]):
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq  # optional toolchain

        q = xiq.X86InductorQuantizer()
        config = xiq.get_default_x86_inductor_quantization_config(is_dynamic=variant == "dynamic")
        for name in modules:
            q.set_module_name_qconfig(name, config)
        return q

    def units(self, variant: str) -> list[str]:
        # The patch embedding (a stride-p conv, <2% of the FLOPs) stays float: Inductor's int8 conv
        # lowering fails its own output-stride assertion on it (torch 2.14, "expected stride 1==36").
        return [u for u in super().units(variant) if u != "patch_embed"]

    def _compiled(self, module: torch.nn.Module) -> Predict:
        if not self.cfg.compile:
            return torch_predict(module)

        inductor_config.freezing = True  # constant weights: lets Inductor pre-pack int8 weights
        return torch_predict(torch.compile(module))

    def fast(self, cand: Candidate) -> Predict:
        return self._compiled(cand.payload)

    def reference(self) -> Predict:
        return self._compiled(copy.deepcopy(self.graph))

    def save(self, cand: Candidate, art_dir: Path) -> tuple[str, dict[str, Any]]:
        program = self.reexport(cand.payload)
        with atomic_path(art_dir / "model.pt2") as tmp:
            torch.export.save(program, str(tmp))
        return "model.pt2", {"run": self.describe(cand.variant)["run_with"]}

    def describe(self, variant: str) -> dict[str, Any]:
        import torchao  # optional toolchain (the export extra)

        timed = "torch.compile (Inductor, freezing)" if self.cfg.compile else "eager (quantize.compile: false)"
        return {"quantiser": f"torchao {torchao.__version__} PT2E X86InductorQuantizer",
                "kind": variant, "weights": "int8 per-channel symmetric",
                "activations": "uint8 per call (dynamic)" if variant == "dynamic" else "uint8, calibrated (MinMax)",
                "always_float": ["patch_embed (Inductor's int8 conv lowering rejects it)"],
                "timed_with": timed,
                "run_with": "m = torch.export.load('model.pt2').module(); torch._inductor.config.freezing = True; "
                            "m = torch.compile(m)  # eager runs the reference Q/DQ graph, slower than fp32"}


class ExecuTorchBackend(PT2EBackend):
    fmt = "executorch"

    def quantizer(self, variant: str, modules: list[str]):
        # optional toolchain (the export extra)
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )

        q = XNNPACKQuantizer()
        config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=variant == "dynamic")
        for name in modules:
            q.set_module_name(name, config)
        return q

    def _lower(self, module: torch.nn.Module, name: str) -> tuple[Path, dict]:
        report: dict[str, Any] = {}
        path = lower_to_pte(self.reexport(module, dynamic=False), self.work / f"{name}.pte", report=report)
        return path, report

    def _runner(self, path: Path) -> Predict:
        from executorch.runtime import Runtime  # optional toolchain

        method = Runtime.get().load_program(path).load_method("forward")
        # the program is fixed at batch 1 (XNNPACK delegates more of it); larger batches run image by image
        return lambda x: map_batches(
            lambda one: method.execute([torch.from_numpy(np.ascontiguousarray(one))])[0].numpy(), x, 1)

    def fast(self, cand: Candidate) -> Predict:
        if not isinstance(cand.payload, tuple):
            cand.payload = (cand.payload, *self._lower(cand.payload, f"{cand.variant}-{len(cand.excluded)}"))
        return self._runner(cand.payload[1])

    def reference(self) -> Predict:
        path, _ = self._lower(copy.deepcopy(self.graph), "fp32")
        return self._runner(path)

    def save(self, cand: Candidate, art_dir: Path) -> tuple[str, dict[str, Any]]:
        self.fast(cand)  # lowered already when it was timed
        _, pte, report = cand.payload
        copy_file(pte, art_dir / "model.pte")
        return "model.pte", {"max_batch": 1, "static_batch": 1, "backend": "xnnpack", "delegation": report}

    def describe(self, variant: str) -> dict[str, Any]:
        return {"quantiser": "executorch XNNPACKQuantizer (PT2E)", "kind": variant,
                "weights": "int8 per-channel symmetric",
                "activations": "int8 per call (dynamic)" if variant == "dynamic" else "int8, calibrated (MinMax)",
                "gated_on": "the converted PT2E graph (same int8 grid); the saved .pte is re-checked",
                "run_with": "executorch runtime, XNNPACK delegate, batch 1"}
