"""ExecuTorch `.pte` with the XNNPACK delegate (Android/iOS/Linux CPUs).

Why the graph used to fragment (44 delegated subgraphs, ~190 ops left to the portable
kernels) and what is done about it, measured on vit-micro-48 with ExecuTorch 1.5.1:

* SDPA: `to_edge` decomposes `scaled_dot_product_attention` with torch's "safe softmax"
  (any / eq / logical_not / where / full_like, to zero fully-masked rows). XNNPACK has none
  of those ops, so every attention split the graph. ViT attention has no mask, so we
  decompose SDPA ourselves into plain `softmax(q @ k^T * scale) @ v` first (`_SDPA_MATH`);
  all of it is then delegated (bmm, mul, softmax).
* Dynamic batch: views and slices whose sizes depend on the symbolic batch are not
  delegated (33 view_copy + 12 slice_copy stayed out). The .pte is therefore exported with
  a fixed batch (1 by default: one face per call on a phone); `vitedge.runtimes` splits
  larger batches. 43 -> 23 subgraphs.
* LayerNorm: the XNNPACK partitioner of ExecuTorch 1.5.1 has no LayerNorm config at all, so
  the 2 * depth + 1 LayerNorms run as portable kernels, and each one ends a delegated
  subgraph: that floor (~2 per block) remains until XNNPACK gains LayerNorm (or the model's
  norms are written as 4-D mean ops).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vitedge.export.common import example_input
from vitedge.io import atomic_path

DEFAULT_BATCH = 1


def _sdpa_math(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """Unmasked, dropout-free attention as plain ops XNNPACK delegates (see module docstring)."""
    if attn_mask is not None or is_causal or dropout_p:
        raise NotImplementedError("vitedge's ExecuTorch lowering expects unmasked eval-mode attention")
    s = scale if scale is not None else q.shape[-1] ** -0.5
    return torch.softmax((q @ k.transpose(-2, -1)) * s, dim=-1) @ v


def _decompose_sdpa(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    if not any(n.target == torch.ops.aten.scaled_dot_product_attention.default for n in program.graph.nodes):
        return program
    table = torch.export.default_decompositions()
    table[torch.ops.aten.scaled_dot_product_attention.default] = _sdpa_math
    return program.run_decompositions(table)


def lower_to_pte(program: torch.export.ExportedProgram, path: str | Path, report: dict | None = None) -> Path:
    """Lower an ExportedProgram (fp32, or a PT2E-quantised one) to an XNNPACK-delegated `.pte` file.

    `report`, if given, is filled with `delegation_summary` (for meta.json).
    """
    # optional toolchain (the export extra)
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(_decompose_sdpa(program), partitioner=[XnnpackPartitioner()])
    buffer = edge.to_executorch().buffer
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer)
    if report is not None:
        report.update(delegation_summary(edge))
    return path


def delegation_summary(edge) -> dict[str, Any]:
    """How much of the graph XNNPACK took: subgraph count and the ops it left out."""
    try:
        from executorch.devtools.backend_debug import get_delegation_info  # optional toolchain
    except ImportError:
        return {}
    info = get_delegation_info(edge.exported_program().graph_module)
    df = info.get_operator_delegation_dataframe()
    left = df[(df.occurrences_in_non_delegated_graphs > 0) & (df.op_type != "Total") & (df.op_type != "getitem")]
    return {"delegated_subgraphs": int(info.num_delegated_subgraphs),
            "delegated_nodes": int(info.num_delegated_nodes),
            "non_delegated_nodes": int(info.num_non_delegated_nodes),
            "not_delegated_ops": {r.op_type: int(r.occurrences_in_non_delegated_graphs) for r in left.itertuples()}}


def static_program(model: torch.nn.Module, batch: int = DEFAULT_BATCH) -> torch.export.ExportedProgram:
    """A fixed-batch export (XNNPACK delegates more of it than of a dynamic one)."""
    with torch.no_grad():
        return torch.export.export(model.eval(), (example_input(model, batch),))


def build(model: torch.nn.Module, info: dict[str, Any], art_dir: Path, precision: str,
          batch: int = DEFAULT_BATCH, **_: Any) -> tuple[str, dict[str, Any]]:
    """The `executorch-fp32` artefact (int8 comes from the quantiser through `lower_to_pte`)."""
    delegation: dict[str, Any] = {}
    path = lower_to_pte(static_program(model, batch), art_dir / "model.pte", report=delegation)
    # max_batch: runtimes split larger batches; static_batch: and pad the last piece
    return path.name, {"max_batch": batch, "static_batch": batch, "backend": "xnnpack", "delegation": delegation}
