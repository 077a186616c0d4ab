"""The validation report: every (artefact, target) result in one page people read and files machines read.

    python -m vitedge.report write --out-dir results/default/report \
        [--distill results/default/reports/distill.json] [--datacard results/default/data/datacard.json] \
        results/default/validation/*.json
    python -m vitedge.report gate results/default/validation/*.json      # exit 1 listing what failed

`write` produces, in --out-dir:

- `index.html`: self-contained (CSS inline, plots as base64 PNGs): opens offline, mails as one file;
- `report.md`: the same tables, plots linked as the PNGs beside it;
- `metrics.csv` / `metrics.json`: one record per row, for scripts and dashboards;
- `pareto-<target>.png` (top-1 vs batch-1 latency; the frontier is what is worth deploying) and
  `confusion-<model>-<format>-<precision>.png`.

`--peers reports/peers.json` (benchmarks/peers.py) adds the models users would deploy instead as
reference points: stars in the Pareto plots and rows marked "(peer)" in the teacher/student/int8
table, never in the matrix or the gate.

Sections: gate verdicts, the full matrix, teacher vs student vs int8 per target (+ peers), speed-up
per runtime (each row vs fp32 of its runtime and vs torch eager fp32, batch 1 and batch), the plots,
the distillation table (if given), the data card (per-split table and its warnings, if the run
folder has data/datacard.json: the run folder is --out-dir's parent, e.g. results/default), and
where each number was measured (machine line per target, referenced from every row as M1, M2 ...).

`gate` is the workflow's last step: it runs after `write` so a failing gate still leaves a report.
"""
from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Iterable

from vitedge.io import atomic_write_bytes, atomic_write_text, read_json, write_json

PRECISION_ORDER = {"fp32": 0, "bf16": 1, "fp16": 2, "int8": 3}
MODEL_ORDER = {"teacher": 0, "student": 1}


# --------------------------------------------------------------------------- rows
def load_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Validation JSONs (files, or folders of them) -> list of results, each remembering its file.

    In a folder, other JSON files are passed over; a file named explicitly must be a validation result."""
    results = []
    for p in paths:
        p = Path(p)
        for f in sorted(p.glob("*.json")) if p.is_dir() else [p]:
            r = read_json(f)
            if not (isinstance(r, dict) and str(r.get("schema", "")).startswith("vitedge-validation/")):
                if p.is_dir():
                    continue
                raise ValueError(f"{f} is not a vitedge validation result (python -m vitedge.validate writes those)")
            r["_file"] = f.name
            results.append(r)
    return results


def _nested(d: dict | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def flatten(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per row (a result with no rows, e.g. an artefact its target does not run, gives one).

    Records carry only scalars, so they go straight to CSV; `confusion` (for the plots) and
    `failure_list` (the gate failures, one by one) are left out of it.
    """
    machines: dict[str, str] = {}
    records = []
    for r in results:
        line = r.get("machine_line") or "unknown machine"
        mid = machines.setdefault(line, f"M{len(machines) + 1}")
        for row in r.get("rows") or [{"entry": "-", "runtime": "-", "precision": r["precision"], "status": r["status"],
                                       "reason": r.get("reason", "")}]:
            tput = row.get("throughput") or []
            best = max(tput, key=lambda t: t["images_per_s"]) if tput else {}
            gate = row.get("gate") or {}
            if row["status"] == "failed" and not gate:  # a broken artefact never passes
                gate = {"passed": False, "failures": [f"failed: {row.get('reason', '')}"]}
            records.append({
                "model": r["model"], "format": r["format"], "precision": row.get("precision", r["precision"]),
                "artefact_precision": r["precision"], "target": r["target"], "entry": row["entry"],
                "runtime": row.get("runtime"), "runtime_version": _nested(row, "runtime_info", "version"),
                "device": row.get("device"), "threads": row.get("threads"),
                "status": row["status"], "reason": row.get("reason", ""),
                "top1": _nested(row, "accuracy", "top1"), "macro_f1": _nested(row, "accuracy", "macro_f1"),
                "reference_top1": _nested(row, "reference_accuracy", "top1"), "drop": row.get("accuracy_drop"),
                "agreement": _nested(row, "parity", "top1_agreement"),
                "max_abs_delta": _nested(row, "parity", "max_abs_delta"),
                "mean_abs_delta": _nested(row, "parity", "mean_abs_delta"), "kl": _nested(row, "parity", "kl"),
                "p50_ms": _nested(row, "latency_ms", "p50"), "p90_ms": _nested(row, "latency_ms", "p90"),
                "p99_ms": _nested(row, "latency_ms", "p99"), "latency_n": _nested(row, "latency_ms", "n"),
                "throughput_batch": best.get("batch"), "throughput_ips": best.get("images_per_s"),
                "memory_mb": _nested(row, "memory", "peak_delta_mb"),
                "size_mb": row["size_bytes"] / 1e6 if row.get("size_bytes") else None,
                "load_s": row.get("load_seconds"),
                "host_load": max((v for v in (row.get("host_load") or {}).values() if v is not None), default=None),
                "cores": _nested(r, "machine", "cpu", "cores"),
                "gate": {True: "pass", False: "FAIL"}.get(gate.get("passed"), "-"),
                "gate_failures": "; ".join(gate.get("failures", [])),
                "stand_in": row.get("stand_in", ""), "machine_id": mid, "machine": line, "file": r.get("_file", ""),
                "peer": bool(r.get("peer")),  # a reference point (benchmarks/peers.py), not a vitedge artefact
                "confusion": _nested(row, "accuracy", "confusion"),
                "failure_list": list(gate.get("failures", [])),  # reasons may contain "; " themselves
            })
    records.sort(key=lambda x: (x["target"], MODEL_ORDER.get(x["model"], 9), x["model"], x["format"],
                                PRECISION_ORDER.get(x["precision"], 9), x["entry"]))
    return records


def gate_failures(records: list[dict[str, Any]]) -> list[str]:
    """'student onnx-int8 @ cpu [onnxruntime]: top-1 drop 3.10 pts > 2.00 allowed' for each failure."""
    return [f"{_label(r)}: {f}" for r in records if r["gate"] == "FAIL" for f in r["failure_list"]]


def busy(r: dict[str, Any]) -> bool:
    """Timed while the host's load average reached its core count: other work competed for the CPU."""
    return r.get("host_load") is not None and bool(r.get("cores")) and r["host_load"] >= r["cores"]


def _label(r: dict[str, Any]) -> str:
    return f"{r['model']} {r['format']}-{r['artefact_precision']} @ {r['target']} [{r['entry']}]"


# --------------------------------------------------------------------------- formatting
def _fmt(v: Any, kind: str) -> str:
    if v is None or v == "":
        return "–"
    if kind == "pct":
        return f"{100 * v:.2f}"
    if kind == "pts":
        return f"{100 * v:+.2f}"
    if kind == "ms":
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "sci":
        return f"{v:.2g}"
    if kind == "mb":
        return f"{v:.2f}"
    return str(v)


# (header, record key, format): the matrix table, in both HTML and Markdown
MATRIX = [
    ("model", "model", "str"), ("format", "format", "str"), ("precision", "precision", "str"),
    ("target", "target", "str"), ("runtime", "entry", "str"), ("status", "status", "str"),
    ("test top-1 %", "top1", "pct"), ("drop vs fp32 (pts)", "drop", "pts"), ("agreement %", "agreement", "pct"),
    ("max|Δ|", "max_abs_delta", "sci"), ("p50 ms bs1", "p50_ms", "ms"), ("p99 ms bs1", "p99_ms", "ms"),
    ("throughput img/s", "throughput_ips", "int"), ("peak mem MB", "memory_mb", "mb"), ("size MB", "size_mb", "mb"),
    ("gate", "gate", "str"), ("machine", "machine_id", "str"),
]


def _status_text(r: dict[str, Any]) -> str:
    return r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"


def _cells(r: dict[str, Any], columns=MATRIX) -> list[str]:
    cells = []
    for _, key, kind in columns:
        if key == "status":
            cells.append(_status_text(r))
        elif key == "throughput_ips" and r.get("throughput_ips") is not None:
            cells.append(f"{_fmt(r['throughput_ips'], 'int')} (bs {r['throughput_batch']})")
        elif key == "entry" and r.get("stand_in"):
            cells.append(f"{r['entry']} †")
        elif key == "p50_ms" and r.get("p50_ms") is not None and busy(r):
            cells.append(f"{_fmt(r['p50_ms'], kind)} ⚠")
        else:
            cells.append(_fmt(r.get(key), kind))
    return cells


def _ok(records: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    return [r for r in records if r["target"] == target and r["status"] == "ok" and r["p50_ms"]]


def _fastest(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: r["p50_ms"]):
        groups.setdefault((r["model"], r["precision"]), r)
    return groups


def compare_models(records: list[dict[str, Any]], peers: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per target, the fastest ok row of each (model, precision): teacher fp32 vs student fp32 vs student int8 ...

    Speed-up and size ratio are against the target's teacher fp32 (or its first group if it has no teacher).
    `peers` (records of benchmarks/peers.py's results) follow each target's models as reference points,
    against the same baseline."""
    out = []
    for target in sorted({r["target"] for r in records}):
        groups = _fastest(_ok(records, target))
        keys = sorted(groups, key=lambda k: (MODEL_ORDER.get(k[0], 9), k[0], PRECISION_ORDER.get(k[1], 9)))
        if not keys:
            continue
        base = groups.get(("teacher", "fp32"), groups[keys[0]])
        peer_groups = _fastest(_ok(peers or [], target))
        for r in [groups[k] for k in keys] + [peer_groups[k] for k in sorted(peer_groups)]:
            out.append({**r, "speedup": base["p50_ms"] / r["p50_ms"],
                        "size_ratio": (r["size_mb"] / base["size_mb"]) if r["size_mb"] and base["size_mb"] else None,
                        "baseline": f"{base['model']} {base['precision']}",
                        "model": f"{r['model']} (peer)" if r.get("peer") else r["model"]})
    return out


def speedups(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a user gains, per target and runtime: every measured row against fp32 of the same model in the
    same runtime (entry), and against the same model's torch eager fp32 on that target; at batch 1
    (p50 latency) and at the throughput batch (images/s). Ratios > 1 mean faster."""
    out = []
    ok = [r for r in records if r["status"] == "ok" and r["p50_ms"] and not r.get("peer")]
    index = {(r["target"], r["model"], r["entry"], r["precision"]): r for r in ok}
    # a target without a torch eager row (mobile) is compared with the eager CPU row of the same thread count
    eager_cpu = {(r["model"], r["threads"]): r for r in ok if r["entry"] == "torch eager" and r["precision"] == "fp32"
                 and r["device"] == "cpu"}
    for r in ok:
        same = index.get((r["target"], r["model"], r["entry"], "fp32"))
        eager = index.get((r["target"], r["model"], "torch eager", "fp32")) or (
            eager_cpu.get((r["model"], r["threads"])) if r["device"] == "cpu" else None)

        def ratio(base: dict[str, Any] | None, key: str, inverse: bool) -> float | None:
            if not base or not base.get(key) or not r.get(key):
                return None
            return base[key] / r[key] if inverse else r[key] / base[key]

        out.append({**r, "vs_fp32_bs1": ratio(same, "p50_ms", True),
                    "vs_fp32_batch": ratio(same, "throughput_ips", False),
                    "vs_eager_bs1": ratio(eager, "p50_ms", True),
                    "vs_eager_batch": ratio(eager, "throughput_ips", False)})
    return out


SPEEDUP = [("target", "target", "str"), ("model", "model", "str"), ("format", "format", "str"),
           ("precision", "precision", "str"), ("runtime", "entry", "str"), ("threads", "threads", "str"),
           ("p50 ms bs1", "p50_ms", "ms"), ("throughput img/s", "throughput_ips", "int"),
           ("×fp32 same runtime bs1", "vs_fp32_bs1", "x"), ("×fp32 same runtime batch", "vs_fp32_batch", "x"),
           ("×torch eager fp32 bs1", "vs_eager_bs1", "x"), ("×torch eager fp32 batch", "vs_eager_batch", "x")]


def _speedup_cells(r: dict[str, Any]) -> list[str]:
    cells = []
    for _, key, kind in SPEEDUP:
        if key == "throughput_ips" and r.get(key) is not None:
            cells.append(f"{_fmt(r[key], 'int')} (bs {r['throughput_batch']})")
        else:
            cells.append(f"{r[key]:.2f}x" if kind == "x" and r.get(key) else _fmt(r.get(key), kind))
    return cells


COMPARE = [("target", "target", "str"), ("model", "model", "str"), ("precision", "precision", "str"),
           ("fastest as", "format", "str"), ("runtime", "entry", "str"), ("test top-1 %", "top1", "pct"),
           ("macro-F1 %", "macro_f1", "pct"), ("p50 ms bs1", "p50_ms", "ms"), ("speed-up", "speedup", "x"),
           ("size MB", "size_mb", "mb"), ("size ratio", "size_ratio", "x")]


def _compare_cells(r: dict[str, Any]) -> list[str]:
    return [f"{r[key]:.2f}x" if kind == "x" and r.get(key) else _fmt(r.get(key), kind) for _, key, kind in COMPARE]


# --------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on CI or cluster nodes
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both latency (lower) and accuracy (higher), fastest first."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(records: list[dict[str, Any]], target: str, peers: list[dict[str, Any]] | None = None) -> bytes:
    """Top-1 vs batch-1 latency on one target; `peers` (benchmarks/peers.py) are drawn as black stars."""
    plt = _pyplot()
    ok = [r for r in records if r["target"] == target and r["status"] == "ok" and r["p50_ms"]]
    peer_rows = [r for r in peers or [] if r["target"] == target and r["status"] == "ok" and r["p50_ms"]]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    models = sorted({r["model"] for r in ok}, key=lambda m: (MODEL_ORDER.get(m, 9), m))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # the same colour for a model in every plot: teacher, student, then the rest
    others = sorted(m for m in models if m not in MODEL_ORDER)
    index = {**MODEL_ORDER, **{m: len(MODEL_ORDER) + i for i, m in enumerate(others)}}
    colours = {m: palette[index[m] % len(palette)] for m in models}
    markers = {"fp32": "o", "bf16": "D", "fp16": "s", "int8": "^"}
    # points are numbered and explained in a key under the plot: full labels collide when two
    # artefacts land on the same spot (same accuracy, similar latency), which is the common case
    key = []
    for i, r in enumerate(sorted(ok + peer_rows, key=lambda r: r["p50_ms"]), start=1):
        if r.get("peer"):
            ax.scatter(r["p50_ms"], 100 * r["top1"], color="black", marker="*", s=150, zorder=3)
        else:
            ax.scatter(r["p50_ms"], 100 * r["top1"], color=colours[r["model"]],
                       marker=markers.get(r["precision"], "x"), s=60, edgecolor="black", linewidth=0.5, zorder=3)
        ax.annotate(str(i), (r["p50_ms"], 100 * r["top1"]), textcoords="offset points", fontsize=8,
                    xytext=(5, 5) if i % 2 else (5, -11), weight="bold")
        key.append(f"{i}: {r['model']}{' (peer)' if r.get('peer') else ''} {r['format']}-{r['precision']} "
                   f"({r['entry']}), {r['p50_ms']:.3g} ms, {100 * r['top1']:.1f}%")
    ax.annotate("\n".join(key), xy=(0, -0.14), xycoords="axes fraction", va="top", fontsize=7, family="monospace")
    pts = [(r["p50_ms"], 100 * r["top1"]) for r in ok + peer_rows]
    front = [pts[i] for i in pareto_front(pts)]
    if len(front) > 1:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="grey", ls="--", lw=1,
                label="Pareto frontier", zorder=2)
    if pts and max(p[0] for p in pts) / min(p[0] for p in pts) > 20:
        ax.set_xscale("log")
    for m in models:  # legend: colour = model, marker = precision
        ax.scatter([], [], color=colours[m], marker="o", label=m)
    if peer_rows:
        ax.scatter([], [], color="black", marker="*", s=90, label="peer (what users pick instead)")
    for p in sorted({r["precision"] for r in ok}, key=lambda p: PRECISION_ORDER.get(p, 9)):
        ax.scatter([], [], color="white", edgecolor="black", marker=markers.get(p, "x"), label=p)
    ax.legend(fontsize=8, loc="best")
    ax.set_xlabel("latency p50, batch 1 (ms)  ← faster")
    ax.set_ylabel("test top-1 (%)")
    stand_in = " (host stand-in)" if any(r["stand_in"] for r in ok) else ""
    machine = textwrap.fill(ok[0]["machine"], 110) if ok else ""
    ax.set_title(f"{target}{stand_in}: accuracy vs latency\n{machine}", fontsize=9)
    ax.grid(True, alpha=0.3)
    return _png(fig)


def plot_confusion(r: dict[str, Any], classes: list[str]) -> bytes:
    import numpy as np

    plt = _pyplot()
    cm = np.asarray(r["confusion"], dtype=float)
    rates = cm / np.clip(cm.sum(axis=1, keepdims=True), 1, None)  # recall per true class
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{r['model']} {r['format']}-{r['precision']} ({r['entry']})\ntop-1 {100 * r['top1']:.1f}%, "
                 f"macro-F1 {100 * r['macro_f1']:.1f}%", fontsize=8)
    return _png(fig)


def confusion_picks(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One ok row per (model, format, precision): the confusion matrix does not depend on the target
    (and where it does, parity already says so)."""
    seen: dict[tuple, dict[str, Any]] = {}
    for r in records:
        if r["status"] == "ok" and r["confusion"] is not None:
            seen.setdefault((r["model"], r["format"], r["precision"]), r)
    return list(seen.values())


# --------------------------------------------------------------------------- HTML / Markdown
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;max-width:1500px}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f2f2f2}
td.l,th.l{text-align:left}
tr.ok td.status{color:#176317}
tr.skipped td{color:#777}
tr.failed td.status,td.FAIL{color:#b00020;font-weight:bold}
.banner{padding:.6em 1em;border-radius:6px;font-weight:bold;display:inline-block}
.pass{background:#e3f4e3;color:#176317}.fail{background:#fde4e7;color:#b00020}.none{background:#eee}
.figs{display:flex;flex-wrap:wrap;gap:12px}.figs img{border:1px solid #ddd}
code,.small{font-size:12px;color:#555}
"""
TEXT_COLS = {"model", "format", "precision", "target", "runtime", "status", "fastest as", "gate", "machine",
             "split", "size stored", "size on disk"}


def _html_table(headers: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    e = html.escape
    head = "".join(f'<th class="{"l" if h in TEXT_COLS else ""}">{e(h)}</th>' for h in headers)
    body = []
    for i, cells in enumerate(rows):
        tds = []
        for h, c in zip(headers, cells):
            cls = ("l " if h in TEXT_COLS else "") + ("status " if h == "status" else "") + (c if c == "FAIL" else "")
            tds.append(f'<td class="{cls.strip()}">{e(c)}</td>')
        body.append(f'<tr class="{classes[i] if classes else ""}">{"".join(tds)}</tr>')
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    def esc(c: str) -> str:
        return c.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in headers) + " |",
             "|" + "|".join("---" if h in TEXT_COLS else "---:" for h in headers) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in cells) + " |" for cells in rows]
    return "\n".join(lines)


def distill_table(distill: dict[str, Any]) -> tuple[list[str], list[list[str]], str]:
    """(headers, rows, caption) from vitedge.distill's report JSON; tolerant of missing fields."""
    cols = [("params", "params", lambda v: f"{v / 1e6:.2f}M"), ("MFLOPs", "flops", lambda v: f"{v / 1e6:.1f}"),
            ("CPU bs1 ms", "latency_ms_bs1", lambda v: f"{v:.2f}"),
            ("val top-1 %", "val_top1", lambda v: f"{100 * v:.2f}"),
            ("test top-1 %", "test_top1", lambda v: f"{100 * v:.2f}"),
            ("test macro-F1 %", "test_macro_f1", lambda v: f"{100 * v:.2f}")]
    rows = [[name] + [f(m[k]) if isinstance(m.get(k), (int, float)) else "–" for _, k, f in cols]
            for name, m in (distill.get("models") or {}).items()]
    d = distill.get("distillation") or {}
    caption = ", ".join(f"{k} {v}" for k, v in d.items())
    return ["model"] + [c[0] for c in cols], rows, caption


def _gate_phrase(g: dict[str, Any]) -> str:
    parts = []
    if g.get("max_accuracy_drop") is not None:
        parts.append(f"top-1 drop at most {100 * g['max_accuracy_drop']:.2f} points")
    if g.get("min_agreement") is not None:
        parts.append(f"agreement with the fp32 reference at least {100 * g['min_agreement']:.2f}%")
    return " and ".join(parts) or "none"


SPEEDUP_NOTE = ("Each measured row against fp32 of the same model in the same runtime (what int8 buys there) and "
                "against the same model's torch eager fp32 on the same target, or on this CPU with the same threads "
                "for targets without an eager row (what leaving PyTorch buys), at batch 1 "
                "(p50 latency) and at the throughput batch (images/s); > 1x is faster. Threads: the target's "
                "budget; benchmarks/compression.py adds 1 vs 2 threads.")
NOTES = ("Drop and agreement are against the PyTorch fp32 checkpoint of the same model on the same "
         "preprocessed test images. Latency: batch 1 after warm-up, p50/p99 over n timed calls (vitedge.bench); "
         "throughput: the best of the larger batches, images / p50 batch latency; peak mem: growth of the process "
         "while loading and benchmarking. † host stand-in: measured on this host with the target's thread budget, "
         "not on the device itself.")


def summarise(results: list[dict[str, Any]], records: list[dict[str, Any]],
              peers: list[dict[str, Any]] | None = None, peers_skipped: list[dict[str, Any]] | None = None
              ) -> dict[str, Any]:
    """Everything the pages show except the plots: verdicts, counts, texts and table cells.
    `peers`: flattened records of benchmarks/peers.py's results; `peers_skipped`: its skipped list."""
    failures = gate_failures(records)
    verdicts = {r["gate"] for r in records}
    passed = False if "FAIL" in verdicts else (True if "pass" in verdicts else None)
    counts = {s: sum(r["status"] == s for r in records) for s in ("ok", "skipped", "failed")}
    verdict = {True: "all gates passed", False: f"{len(failures)} gate failure(s)", None: "no gate evaluated"}[passed]
    gates = next((r["gates"] for r in results if r.get("gates")), {})
    gate_text = _gate_phrase(gates) + "".join(f"; {p}: {_gate_phrase(g)}"
                                              for p, g in (gates.get("by_precision") or {}).items())
    notes = NOTES
    n_busy = sum(busy(r) for r in records)
    if n_busy:
        notes += (f" ⚠ {n_busy} row(s) were timed while the host's 1-minute load average was at or above its "
                  "core count: other processes competed for the CPU, so those latencies are upper bounds.")
    targets = sorted({r["target"] for r in records})
    measured = {r["target"] for r in records if r["status"] == "ok"}
    compare = compare_models(records, peers)
    speed = speedups(records)
    libs = next((r["machine"].get("libraries") for r in results if isinstance(r.get("machine"), dict)), None)
    return {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "passed": passed, "failures": failures, "counts": counts,
        "summary": f"{len(records)} rows: {counts['ok']} measured, {counts['skipped']} skipped, "
                   f"{counts['failed']} failed — {verdict}",
        "gates": gates, "gate_text": gate_text, "notes": notes,
        "matrix": ([h for h, _, _ in MATRIX], [_cells(r) for r in records], [r["status"] for r in records]),
        "compare": ([h for h, _, _ in COMPARE], [_compare_cells(r) for r in compare]), "compare_rows": compare,
        "speedups": ([h for h, _, _ in SPEEDUP], [_speedup_cells(r) for r in speed]), "speedup_rows": speed,
        "peers": _peers_text(peers or [], peers_skipped or []),
        "unmeasured": {t: sorted({r["reason"] for r in records if r["target"] == t}) for t in targets
                       if t not in measured},
        "machines": {r["machine_id"]: r["machine"] for r in records},
        "libraries": ", ".join(f"{k} {v}" for k, v in (libs or {}).items()),
    }


def _peers_text(peers: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> str:
    """One sentence on the peers: what was measured as a reference point, what could not be and why."""
    parts = [f"{r['model']} ({r['format']}-{r['precision']}, {r['entry']} @ {r['target']}): "
             f"{_fmt(r['top1'], 'pct')}% at {_fmt(r['p50_ms'], 'ms')} ms" for r in peers if r["status"] == "ok"]
    parts += [f"{s.get('name', s.get('peer'))}: skipped: {s['reason']}" for s in skipped]
    if not parts:
        return ""
    return ("Peers (what users would deploy instead, measured in this run on the same test split and machine by "
            "benchmarks/peers.py; stars in the plots): " + "; ".join(parts) + ".")


def make_figures(records: list[dict[str, Any]], classes: list[str],
                 peers: list[dict[str, Any]] | None = None) -> list[tuple[str, str, bytes]]:
    """(section, file name, PNG bytes): a Pareto plot per target with measured rows, confusion matrices."""
    figures = [("pareto", f"pareto-{t}.png", plot_pareto(records, t, peers))
               for t in sorted({r["target"] for r in records if r["status"] == "ok"})]
    figures += [("confusion", f"confusion-{r['model']}-{r['format']}-{r['precision']}.png", plot_confusion(r, classes))
                for r in confusion_picks(records)]
    return figures


def datacard_section(card: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the pages show of vitedge.data's data card: its per-split table, warnings and source."""
    if not card:
        return None
    from vitedge.data.datacard import summary_table

    src = card.get("source") or {}
    return {"table": summary_table(card), "warnings": [f"{w['check']}: {w['message']}" for w in card["warnings"]],
            "source": " ".join(str(src[k]) for k in ("kind", "path") if src.get(k)) or "unknown source"}


DATACARD_NOTE = ("Sharpness: variance of the 3x3 Laplacian per image (blur drives it towards 0). The training split "
                 "is compared with val+test pooled; see data/datacard.md for classes, overlaps and examples.")


def render_html(title: str, s: dict[str, Any], figures: list[tuple[str, str, bytes]],
                distill: dict[str, Any] | None, datacard: dict[str, Any] | None = None) -> str:
    e = html.escape
    banner = {True: "pass", False: "fail", None: "none"}[s["passed"]]
    card = datacard_section(datacard)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{CSS}</style>"
             f"</head><body><h1>{e(title)}</h1><p class='small'>generated {e(s['generated'])}</p>",
             f"<p class='banner {banner}'>{e(s['summary'])}</p>",
             f"<div><p class='banner fail'>data card: {len(card['warnings'])} warning(s) about the data these models "
             "were trained and tested on: see Data card below</p></div>" if card and card["warnings"] else "",
             "<h2>Gate verdicts</h2>", f"<p>Gates: {e(s['gate_text'])}.</p>",
             "<ul>" + "".join(f"<li class='FAIL'>{e(f)}</li>" for f in s["failures"]) + "</ul>" if s["failures"]
             else "<p>No row failed a gate.</p>",
             "<h2>Validation matrix</h2>", f"<p class='small'>{e(s['notes'])}</p>", _html_table(*s["matrix"]),
             "<h2>Teacher vs student vs int8</h2><p class='small'>Per target, the fastest measured runtime of each "
             "model and precision; speed-up and size ratio against the teacher in fp32.</p>",
             _html_table(*s["compare"]) if s["compare"][1] else "<p>Nothing measured.</p>",
             f"<p class='small'>{e(s['peers'])}</p>" if s.get("peers") else "",
             "<h2>Speed-up per runtime</h2><p class='small'>" + e(SPEEDUP_NOTE) + "</p>",
             _html_table(*s["speedups"]) if s["speedups"][1] else "<p>Nothing measured.</p>",
             "<h2>Accuracy vs latency</h2>"]
    parts += [f"<p><b>{e(t)}</b>: nothing measured here ({e('; '.join(why))}).</p>"
              for t, why in s["unmeasured"].items()]

    def gallery(section: str) -> str:
        return "<div class='figs'>" + "".join(
            f"<img alt='{e(name)}' title='{e(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            for sec, name, png in figures if sec == section) + "</div>"

    parts += [gallery("pareto"), "<h2>Confusion matrices (rows: true class; shade: recall)</h2>", gallery("confusion")]
    if distill:
        dh, dr, cap = distill_table(distill)
        parts += ["<h2>Distillation</h2>", f"<p class='small'>{e(cap)}</p>", _html_table(dh, dr)]
    if card:
        parts += ["<h2>Data card</h2>", f"<p class='small'>{e(card['source'])}. {e(DATACARD_NOTE)}</p>",
                  _html_table(*card["table"]),
                  "<ul>" + "".join(f"<li class='FAIL'>{e(w)}</li>" for w in card["warnings"]) + "</ul>"
                  if card["warnings"] else "<p>No data card warnings.</p>"]
    parts += ["<h2>Where each number was measured</h2><ul>",
              *[f"<li><b>{e(mid)}</b>: {e(line)}</li>" for mid, line in s["machines"].items()], "</ul>"]
    if s["libraries"]:
        parts.append(f"<p class='small'>libraries: {e(s['libraries'])}</p>")
    return "\n".join(parts + ["</body></html>"])


def render_markdown(title: str, s: dict[str, Any], figures: list[tuple[str, str, bytes]],
                    distill: dict[str, Any] | None, datacard: dict[str, Any] | None = None) -> str:
    def images(section: str) -> list[str]:
        return [f"![{name}]({name})" for sec, name, _ in figures if sec == section]

    card = datacard_section(datacard)
    md = [f"# {title}", "", f"generated {s['generated']}", "", f"**{s['summary']}**", ""]
    if card and card["warnings"]:
        md += [f"**⚠ data card: {len(card['warnings'])} warning(s) about the data these models were trained and "
               "tested on: see Data card below.**", ""]
    md += ["## Gate verdicts", "", f"Gates: {s['gate_text']}.", ""]
    md += [f"- FAIL {f}" for f in s["failures"]] or ["No row failed a gate."]
    md += ["", "## Validation matrix", "", s["notes"], "", _md_table(*s["matrix"][:2]), "",
           "## Teacher vs student vs int8", "", _md_table(*s["compare"]) if s["compare"][1] else "Nothing measured.",
           *(["", s["peers"]] if s.get("peers") else []),
           "", "## Speed-up per runtime", "", SPEEDUP_NOTE, "",
           _md_table(*s["speedups"]) if s["speedups"][1] else "Nothing measured.",
           "", "## Accuracy vs latency", ""]
    md += [f"- **{t}**: nothing measured here ({'; '.join(why)})." for t, why in s["unmeasured"].items()]
    md += ["", *images("pareto"), "", "## Confusion matrices", "", *images("confusion")]
    if distill:
        dh, dr, cap = distill_table(distill)
        md += ["", "## Distillation", "", cap, "", _md_table(dh, dr)]
    if card:
        md += ["", "## Data card", "", f"{card['source']}. {DATACARD_NOTE}", "", _md_table(*card["table"]), ""]
        md += [f"- WARNING {w}" for w in card["warnings"]] or ["No data card warnings."]
    md += ["", "## Where each number was measured", ""]
    md += [f"- **{mid}**: {line}" for mid, line in s["machines"].items()]
    if s["libraries"]:
        md += ["", f"libraries: {s['libraries']}"]
    return "\n".join(md) + "\n"


def write_report(results: list[dict[str, Any]], out_dir: str | Path, distill: dict[str, Any] | None = None,
                 title: str = "vitedge validation report", datacard: dict[str, Any] | None = None,
                 peers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write index.html, report.md, metrics.csv, metrics.json and the PNGs; return metrics.json's content.

    `datacard` is vitedge.data's datacard.json content, shown in its own section when given.
    `peers` is benchmarks/peers.py's peers.json content: reference points in the plots and the model
    table (never in the matrix or the gate)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    peer_results = [{**r, "peer": r.get("peer") or True} for r in (peers or {}).get("results", [])]
    flat = flatten(results + peer_results)  # one pass: peers share the machine ids
    records = [r for r in flat if not r["peer"]]
    peer_records = [r for r in flat if r["peer"]]
    classes = next((list(row["accuracy"]["per_class"]) for r in results for row in r.get("rows") or []
                    if "accuracy" in row), [])
    s = summarise(results, records, peer_records, (peers or {}).get("skipped", []))
    figures = make_figures(records, classes, peer_records)
    for old in [*out_dir.glob("pareto-*.png"), *out_dir.glob("confusion-*.png")]:
        old.unlink()  # plots of rows no longer in the matrix must not linger beside the new report
    for _, name, png in figures:
        atomic_write_bytes(out_dir / name, png)
    atomic_write_text(out_dir / "index.html", render_html(title, s, figures, distill, datacard))
    atomic_write_text(out_dir / "report.md", render_markdown(title, s, figures, distill, datacard))

    scalar = [{k: v for k, v in r.items() if k not in ("confusion", "failure_list")} for r in records]
    with io.StringIO() as buf:
        w = csv.DictWriter(buf, fieldnames=list(scalar[0]) if scalar else ["model"], lineterminator="\n")
        w.writeheader()
        w.writerows(scalar)
        atomic_write_text(out_dir / "metrics.csv", buf.getvalue())
    metrics = {"generated": s["generated"], "summary": s["summary"], "counts": s["counts"],
               "gate": {"passed": s["passed"], "failures": s["failures"], "gates": s["gates"]},
               "machines": s["machines"], "rows": scalar,
               "comparison": [{k: v for k, v in r.items() if k != "confusion"} for r in s["compare_rows"]],
               "speedups": [{k: v for k, v in r.items() if k not in ("confusion", "failure_list")}
                            for r in s["speedup_rows"]],
               "peers": [{k: v for k, v in r.items() if k not in ("confusion", "failure_list")} for r in peer_records],
               "peers_skipped": list((peers or {}).get("skipped", [])),
               "figures": [name for _, name, _ in figures], "distill": distill,
               "data_warnings": list((datacard or {}).get("warnings", []))}
    write_json(out_dir / "metrics.json", metrics)
    return metrics


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vitedge.report", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write index.html, report.md, metrics.csv/json and PNGs")
    w.add_argument("validation", nargs="+", type=Path, help="validation JSONs, or folders of them")
    w.add_argument("--out-dir", required=True, type=Path)
    w.add_argument("--distill", type=Path, help="reports/distill.json from vitedge.distill (optional)")
    w.add_argument("--datacard", type=Path,
                   help="data/datacard.json from vitedge.data (default: <out-dir>/../data/datacard.json, if there)")
    w.add_argument("--title", default="vitedge validation report")
    w.add_argument("--peers", type=Path, help="reports/peers.json from benchmarks/peers.py (optional)")
    g = sub.add_parser("gate", help="exit 1, listing every failure, if any row failed or missed a gate")
    g.add_argument("validation", nargs="+", type=Path)
    g.add_argument("--report", help="where the report is, to point people at it")
    g.add_argument("--out", type=Path, help="on success, write the verdict here (a workflow target)")
    args = p.parse_args(argv)

    results = load_results(args.validation)
    if args.command == "write":
        distill = read_json(args.distill) if args.distill and args.distill.is_file() else None
        # the workflow writes the report to <run>/report and the card to <run>/data
        card_path = args.datacard or args.out_dir.parent / "data" / "datacard.json"
        datacard = read_json(card_path) if card_path.is_file() else None
        peers = read_json(args.peers) if args.peers and args.peers.is_file() else None
        m = write_report(results, args.out_dir, distill, args.title, datacard, peers)
        print(f"report: {m['summary']} -> {args.out_dir / 'index.html'}")
        return 0
    records = flatten(results)
    failures = gate_failures(records)
    if failures:
        where = f"\nreport: {args.report}" if args.report else ""
        print(f"GATE FAILED: {len(failures)} of {sum(r['gate'] != '-' for r in records)} gated rows\n  "
              + "\n  ".join(failures) + where, file=sys.stderr)
        return 1
    counts = {s: sum(r["status"] == s for r in records) for s in ("ok", "skipped")}
    msg = f"gates passed: {counts['ok']} rows measured, {counts['skipped']} skipped"
    print(msg)
    if args.out:
        write_json(args.out, {"passed": True, "summary": msg, "rows": len(records)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
