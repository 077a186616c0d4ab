"""The validation report: every (artefact, target) result in one page people read and files machines read.

    python -m vitedge.report write --out-dir results/default/report \
        [--distill results/default/reports/distill.json] [--datacard results/default/data/datacard.json] \
        results/default/validation/*.json
    python -m vitedge.report check results/default/validation/*.json     # exit 1 listing rows over budget

`write` produces, in --out-dir:

- `index.html`: self-contained (CSS inline, plots as base64 PNGs): opens offline, mails as one file;
- `report.md`: the same tables, plots linked as the PNGs beside it;
- `metrics.csv` / `metrics.json`: one record per row, for scripts and dashboards;
- `pareto-<target>.png` (top-1 vs batch-1 latency; the frontier is what is worth deploying) and
  `confusion-<model>-<format>-<precision>.png`.

`--peers reports/peers.json` (vitedge.benchmarks.peers) adds the models users would deploy instead as
reference points: stars in the Pareto plots and rows marked "(peer)" in the teacher/student/int8
table, never in the matrix or the verdict.

Sections: budget verdicts, the matrix (rows that ran or failed; skipped rows as one line per target and
reason), teacher vs student vs int8 per target (+ peers), speed-up
per runtime (each row vs fp32 of its runtime and vs torch eager fp32, batch 1 and batch), the plots,
the distillation table (if given), the data card (per-split table and its warnings, if the run
folder has data/datacard.json: the run folder is --out-dir's parent, e.g. results/default), and
where each number was measured (machine line per target, referenced from every row as M1, M2 ...).

`check` is the workflow's last step (rule `check_budgets`): it runs after `write` so a row over budget
still leaves a report. Budgets are `validate.budgets` in the config (`vitedge.validation_rows.Budgets`:
the top-1 drop in points, the agreement as a share).

This package re-exports the public API; the code is in:

- `tables`: validation results (`vitedge.validation_rows`) -> flat `Record`s, derived views, table cells,
  Markdown and CSV tables;
- `verdicts`: rows over budget, the budgets in words, the `check` command;
- `summary`: what both pages say (verdicts, notes, cells), the data card section;
- `plots`: the Pareto and confusion PNGs (matplotlib);
- `html` (+ `templates/report.html.j2`, jinja2, autoescaped) and `markdown`: the two pages;
- `write`: `write_report`, every file at once; `cli` / `__main__`: the command line.
"""
from __future__ import annotations

from vitedge.report.cli import main
from vitedge.report.html import CSS, render_html
from vitedge.report.markdown import render_markdown
from vitedge.report.plots import confusion_picks, make_figures, pareto_front, plot_confusion, plot_pareto
from vitedge.report.summary import DATACARD_NOTE, NOTES, SPEEDUP_NOTE, datacard_section, summarise
from vitedge.report.tables import (COMPARE, MATRIX, MODEL_ORDER, PRECISION_ORDER, SPEEDUP, TEXT_COLS, Record, busy,
                                   compare_models, distill_table, flatten, load_results, skipped_lines, speedups)
from vitedge.report.verdicts import budget_failures
from vitedge.report.write import write_report

__all__ = [
    "COMPARE", "CSS", "DATACARD_NOTE", "MATRIX", "MODEL_ORDER", "NOTES", "PRECISION_ORDER", "SPEEDUP",
    "SPEEDUP_NOTE", "TEXT_COLS", "Record", "budget_failures", "busy", "compare_models", "confusion_picks",
    "datacard_section", "distill_table", "flatten", "load_results", "main", "make_figures", "pareto_front",
    "plot_confusion", "plot_pareto", "render_html", "render_markdown", "skipped_lines", "speedups", "summarise",
    "write_report",
]
