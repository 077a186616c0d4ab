"""The command line of vitedge.report: `write` (all report files) and `check` (every row within budget? the
workflow's last step).

It lives here rather than in __main__.py so that `from vitedge.report import main` works without
importing vitedge.report.__main__ as a plain module, which would make `python -m vitedge.report` warn
that the module was already imported.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from vitedge.io import read_json
from vitedge.report.tables import load_results
from vitedge.report.verdicts import run_check
from vitedge.report.write import write_report

DESCRIPTION = ("The validation report: every (artefact, target) result in one page people read and files "
               "machines read.")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vitedge.report", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write index.html, report.md, metrics.csv/json and PNGs")
    w.add_argument("validation", nargs="+", type=Path, help="validation JSONs, or folders of them")
    w.add_argument("--out-dir", required=True, type=Path)
    w.add_argument("--distill", type=Path, help="reports/distill.json from vitedge.distill (optional)")
    w.add_argument("--datacard", type=Path,
                   help="data/datacard.json from vitedge.data (default: <out-dir>/../data/datacard.json, if there)")
    w.add_argument("--title", default="vitedge validation report")
    w.add_argument("--peers", type=Path, help="reports/peers.json from vitedge.benchmarks.peers (optional)")
    c = sub.add_parser("check", help="exit 1, listing every failure, if any row failed or is over its budgets")
    c.add_argument("validation", nargs="+", type=Path)
    c.add_argument("--report", help="where the report is, to point people at it")
    c.add_argument("--out", type=Path, help="on success, write the verdict here (a workflow target)")
    return p


def _read_optional(path: Path | None) -> dict | None:
    """The JSON at `path`, or None when no path was given or nothing is there (the inputs are optional)."""
    return read_json(path) if path and path.is_file() else None


def run_write(args: argparse.Namespace) -> int:
    results = load_results(args.validation)
    # the workflow writes the report to <run>/report and the card to <run>/data
    card_path = args.datacard or args.out_dir.parent / "data" / "datacard.json"
    metrics = write_report(results, args.out_dir, _read_optional(args.distill), args.title,
                           _read_optional(card_path), _read_optional(args.peers))
    print(f"report: {metrics['summary']} -> {args.out_dir / 'index.html'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "write":
        return run_write(args)
    return run_check(load_results(args.validation), args.report, args.out)
