"""What the exporters and quantisers share on the torch side: loading the source checkpoint (BN
folded), a deterministic example input, and the torch.export step. The artefact layout and
`meta.json` are `vitedge.artefact`'s.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vitedge.artefact import DEFAULT_MAX_BATCH
from vitedge.checkpoints import load_model
from vitedge.model import fold_batchnorm


# --------------------------------------------------------------------------- source and program
def load_source(checkpoint_path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A vitedge checkpoint -> (model in eval mode, info). info gains `source_checkpoint` (the path).

    BatchNorm (the hybrid's conv stem, the CNN) is folded into its convs here, once, so every
    exporter and quantiser sees plain convs: no BN node in any artefact, and int8 ranges are
    calibrated on the folded weights the runtime will use."""
    model, info = load_model(checkpoint_path)
    fold_batchnorm(model)
    info["source_checkpoint"] = str(checkpoint_path)
    return model, info


def example_input(cfg_or_model: Any, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A deterministic float32 batch shaped like the model's input (what preprocessing produces)."""
    cfg = getattr(cfg_or_model, "cfg", cfg_or_model)
    if isinstance(cfg, dict):
        in_chans, size = cfg["in_chans"], cfg["img_size"]
    else:
        in_chans, size = cfg.in_chans, cfg.img_size
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, in_chans, size, size, generator=g)


def export_program(model: torch.nn.Module, example_batch: int = 2,
                   max_batch: int = DEFAULT_MAX_BATCH) -> torch.export.ExportedProgram:
    """The torch.export step (ONNX, the .pt2 program, LiteRT and TensorRT's ONNX start here; Core ML
    and ExecuTorch take their own export routes): eval mode, dynamic batch 1..max_batch.

    The example batch is 2, not 1: torch.export specialises on size-1 dimensions.
    """
    model = model.eval()
    x = example_input(model, example_batch)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with torch.no_grad():
        return torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
