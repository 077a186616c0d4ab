"""Which teacher should the next student cycle learn from? Each candidate and their ensemble, on PublicTest.

    python benchmarks/teachers.py --data results/fer2013/data \
        --teachers results/fer2013/models/teacher.pt results/fer2013/models/teacher2.pt [--md reports/fer2013/teachers.md]

Scores every checkpoint on the validation split (PublicTest: where choices are made; PrivateTest is
left for the final model) and, with two or more, their ensemble as `vitedge.distill --teacher a b`
would teach (`TeacherEnsemble`: mean class probabilities). Prints a table; `--md` also writes it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vitedge.data import load_splits  # noqa: E402
from vitedge.distill import load_teacher  # noqa: E402
from vitedge.io import atomic_write_text  # noqa: E402
from vitedge.sysinfo import describe, machine_info  # noqa: E402
from vitedge.engine import evaluate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path, help="a data folder written by `python -m vitedge.data`")
    p.add_argument("--teachers", required=True, nargs="+", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--md", type=Path, help="also write the table here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    val = load_splits(args.data, ("val",))["val"]
    candidates = {str(t): [t] for t in args.teachers}
    if len(args.teachers) > 1:
        candidates["ensemble of all"] = list(args.teachers)
    lines = ["| teacher | params | PublicTest (val) top-1 % | macro-F1 % |", "|---|---:|---:|---:|"]
    for name, paths in candidates.items():
        model, pre, _ = load_teacher(paths)
        scores = evaluate(model.eval(), val, pre)
        lines.append(f"| {name} | {model.num_params() / 1e6:.2f}M | {100 * scores['top1']:.2f} | "
                     f"{100 * scores['macro_f1']:.2f} |")
    lines += ["", f"`python benchmarks/teachers.py` on {describe(machine_info())}."]
    print("\n".join(lines))
    if args.md:
        atomic_write_text(args.md, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
