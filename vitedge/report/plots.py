"""The report's figures as PNG bytes: accuracy vs latency (Pareto) per target, confusion matrices.

Figures are built with matplotlib's object API (`Figure`, rendered by Agg when saved) rather than
pyplot: no display is needed on CI or cluster nodes, no global backend is switched for whoever
imports vitedge.report, and no figure lingers in pyplot's registry after it is saved.
matplotlib comes with the `workflow` extra, which CI installs (`.[all,dev]`).
"""
from __future__ import annotations

import io
import textwrap

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vitedge.report.tables import MODEL_ORDER, PRECISION_ORDER, Record

PRECISION_MARKERS = {"fp32": "o", "bf16": "D", "fp16": "s", "int8": "^"}


def figure_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
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


def model_colours(models: list[str]) -> dict[str, str]:
    """The same colour for a model in every plot: teacher, student, then the rest alphabetically."""
    palette = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    others = sorted(m for m in models if m not in MODEL_ORDER)
    index = {**MODEL_ORDER, **{m: len(MODEL_ORDER) + i for i, m in enumerate(others)}}
    return {m: palette[index[m] % len(palette)] for m in models}


def _numbered_points(ax: Axes, rows: list[Record], colours: dict[str, str]) -> list[str]:
    """Scatter the rows, fastest first, each with its number; return the key explaining the numbers.

    Points are numbered and explained in a key under the plot: full labels collide when two
    artefacts land on the same spot (same accuracy, similar latency), which is the common case."""
    key = []
    for i, r in enumerate(sorted(rows, key=lambda r: r.p50_ms), start=1):
        if r.peer:
            ax.scatter(r.p50_ms, 100 * r.top1, color="black", marker="*", s=150, zorder=3)
        else:
            ax.scatter(r.p50_ms, 100 * r.top1, color=colours[r.model],
                       marker=PRECISION_MARKERS.get(r.precision, "x"), s=60, edgecolor="black", linewidth=0.5,
                       zorder=3)
        ax.annotate(str(i), (r.p50_ms, 100 * r.top1), textcoords="offset points", fontsize=8,
                    xytext=(5, 5) if i % 2 else (5, -11), weight="bold")
        key.append(f"{i}: {r.model}{' (peer)' if r.peer else ''} {r.format}-{r.precision} "
                   f"({r.entry}), {r.p50_ms:.3g} ms, {100 * r.top1:.1f}%")
    return key


def _frontier_and_scale(ax: Axes, rows: list[Record]) -> None:
    """Draw the Pareto frontier; switch to a log latency axis when latencies span more than 20x."""
    pts = [(r.p50_ms, 100 * r.top1) for r in rows]
    front = [pts[i] for i in pareto_front(pts)]
    if len(front) > 1:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="grey", ls="--", lw=1,
                label="Pareto frontier", zorder=2)
    if pts and max(p[0] for p in pts) / min(p[0] for p in pts) > 20:
        ax.set_xscale("log")


def _legend(ax: Axes, ok: list[Record], models: list[str], colours: dict[str, str], peers: bool) -> None:
    """Legend entries drawn as empty scatters: colour = model, marker = precision, star = peer."""
    for m in models:
        ax.scatter([], [], color=colours[m], marker="o", label=m)
    if peers:
        ax.scatter([], [], color="black", marker="*", s=90, label="peer (what users pick instead)")
    for p in sorted({r.precision for r in ok}, key=lambda p: PRECISION_ORDER.get(p, 9)):
        ax.scatter([], [], color="white", edgecolor="black", marker=PRECISION_MARKERS.get(p, "x"), label=p)
    ax.legend(fontsize=8, loc="best")


def plot_pareto(records: list[Record], target: str, peers: list[Record] | None = None) -> bytes:
    """Top-1 vs batch-1 latency on one target; `peers` (vitedge.benchmarks.peers) are drawn as black stars."""
    ok = [r for r in records if r.target == target and r.status == "ok" and r.p50_ms]
    peer_rows = [r for r in peers or [] if r.target == target and r.status == "ok" and r.p50_ms]
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    models = sorted({r.model for r in ok}, key=lambda m: (MODEL_ORDER.get(m, 9), m))
    colours = model_colours(models)
    key = _numbered_points(ax, ok + peer_rows, colours)
    ax.annotate("\n".join(key), xy=(0, -0.14), xycoords="axes fraction", va="top", fontsize=7, family="monospace")
    _frontier_and_scale(ax, ok + peer_rows)
    _legend(ax, ok, models, colours, bool(peer_rows))
    ax.set_xlabel("latency p50, batch 1 (ms)  ← faster")
    ax.set_ylabel("test top-1 (%)")
    stand_in = " (host stand-in)" if any(r.stand_in for r in ok) else ""
    machine = textwrap.fill(ok[0].machine, 110) if ok else ""
    ax.set_title(f"{target}{stand_in}: accuracy vs latency\n{machine}", fontsize=9)
    ax.grid(True, alpha=0.3)
    return figure_png(fig)


def plot_confusion(r: Record, classes: list[str]) -> bytes:
    """Counts per (true, predicted) class, shaded by recall per true class."""
    cm = np.asarray(r.confusion, dtype=float)
    rates = cm / np.clip(cm.sum(axis=1, keepdims=True), 1, None)  # recall per true class
    fig = Figure(figsize=(4.6, 4.0))
    ax = fig.subplots()
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{r.model} {r.format}-{r.precision} ({r.entry})\ntop-1 {100 * r.top1:.1f}%, "
                 f"macro-F1 {100 * r.macro_f1:.1f}%", fontsize=8)
    return figure_png(fig)


def confusion_picks(records: list[Record]) -> list[Record]:
    """One ok row per (model, format, precision): the confusion matrix does not depend on the target
    (and where it does, parity already says so)."""
    seen: dict[tuple, Record] = {}
    for r in records:
        if r.status == "ok" and r.confusion is not None:
            seen.setdefault((r.model, r.format, r.precision), r)
    return list(seen.values())


def make_figures(records: list[Record], classes: list[str],
                 peers: list[Record] | None = None) -> list[tuple[str, str, bytes]]:
    """(section, file name, PNG bytes): a Pareto plot per target with measured rows, confusion matrices."""
    figures = [("pareto", f"pareto-{t}.png", plot_pareto(records, t, peers))
               for t in sorted({r.target for r in records if r.status == "ok"})]
    figures += [("confusion", f"confusion-{r.model}-{r.format}-{r.precision}.png", plot_confusion(r, classes))
                for r in confusion_picks(records)]
    return figures
