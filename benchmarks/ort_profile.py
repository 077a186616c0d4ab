"""Where batch-1 time goes in ONNX Runtime: per-operator time from ORT's own profiler. A script, not a test.

    python benchmarks/ort_profile.py MODEL.onnx [MODEL2.onnx ...] [--threads 1] [--runs 300] [--opt-level all]
        [--md out.md]

For each model: a session with `enable_profiling`, warm-up, then `--runs` batch-1 calls on a fixed
input; the trace's kernel events ("Node" category, `<node>_kernel_time`) are summed per operator
type and divided by the runs: mean microseconds per call, share of the kernel time, node count.
"Session overhead" is wall time per call minus the summed kernel time (the executor, input/output
copies, thread hand-offs): on a sub-millisecond model it is a large part of batch-1 latency.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}


def profile(model: str | Path, threads: int = 1, runs: int = 300, opt_level: str = "all",
            spinning: bool | None = None, warmup: int = 30) -> dict:
    """{"wall_us": per call, "kernel_us": summed kernels per call, "ops": {op_type: {"us", "share", "nodes"}}}.

    A vitedge artefact's `ort_session` (meta.json beside the model) is applied, as the runtime does."""
    import onnxruntime as ort

    meta = Path(model).parent / "meta.json"
    settings = (json.loads(meta.read_text()).get("ort_session") or {}) if meta.is_file() else {}
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[opt_level])
    if spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(settings.get("disabled_optimizers", [])) or None)
        inp = sess.get_inputs()[0]
        shape = [1 if not isinstance(d, int) else d for d in inp.shape]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        for _ in range(warmup):
            sess.run(None, {inp.name: x})
        # the trace includes the warm-up calls: count only the last `runs` of each node
        t0 = time.perf_counter()
        for _ in range(runs):
            sess.run(None, {inp.name: x})
        wall = (time.perf_counter() - t0) / runs
        trace = json.loads(Path(sess.end_profiling()).read_text())
    per_node: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for ev in trace:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            args = ev.get("args", {})
            per_node[ev["name"]].append((float(ev["dur"]), args.get("op_name", "?")))
    ops: dict[str, dict] = defaultdict(lambda: {"us": 0.0, "nodes": 0})
    for _, events in per_node.items():
        last = events[-runs:]
        op = last[0][1]
        ops[op]["us"] += sum(d for d, _ in last) / runs
        ops[op]["nodes"] += 1
    kernel = sum(v["us"] for v in ops.values())
    for v in ops.values():
        v["share"] = v["us"] / kernel if kernel else 0.0
    return {"model": str(model), "threads": threads, "opt_level": opt_level, "runs": runs, "session": settings,
            "nodes": sum(v["nodes"] for v in ops.values()), "wall_us": wall * 1e6,
            "kernel_us": kernel, "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1]["us"]))}


def table(p: dict, top: int = 12) -> str:
    lines = [f"**{p['model']}** ({p['threads']} thread(s), graph optimisation {p['opt_level']}"
             f"{', ' + json.dumps(p['session']) if p['session'] else ''}, {p['runs']} runs): {p['nodes']} nodes after "
             f"ORT's session optimisations; {p['wall_us']:.0f} µs per call with the profiler on, kernels "
             f"{p['kernel_us']:.0f} µs, outside the kernels {p['wall_us'] - p['kernel_us']:.0f} µs", "",
             "| operator | nodes | µs per call | share of kernel time |", "|---|---:|---:|---:|"]
    for op, v in list(p["ops"].items())[:top]:
        lines.append(f"| {op} | {v['nodes']} | {v['us']:.1f} | {100 * v['share']:.1f}% |")
    rest = list(p["ops"].values())[top:]
    if rest:
        lines.append(f"| (other {len(rest)} types) | {sum(v['nodes'] for v in rest)} | "
                     f"{sum(v['us'] for v in rest):.1f} | {100 * sum(v['share'] for v in rest):.1f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--opt-level", default="all", choices=list(LEVELS))
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--md", type=Path, help="also write the tables here")
    ap.add_argument("--json", type=Path, help="also write the profiles here")
    args = ap.parse_args(argv)
    profiles = [profile(m, args.threads, args.runs, args.opt_level) for m in args.models]
    text = "\n\n".join(table(p, args.top) for p in profiles) + "\n"
    print(text)
    if args.md:
        args.md.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(profiles, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
