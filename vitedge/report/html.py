"""The report as one self-contained HTML page, rendered by jinja2 from templates/report.html.j2.

This module turns the summary (vitedge.report.summary) and the figures into the template's context:
tables as header/row/cell dicts carrying their CSS classes, plots as base64 data URIs (so the page
opens offline and mails as one file). Autoescaping is on for the whole template: every value shown
(titles, reasons, model and runtime names, machine lines) is text, never markup.
"""
from __future__ import annotations

import base64
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from vitedge.report.summary import DATACARD_NOTE, SPEEDUP_NOTE, datacard_section
from vitedge.report.tables import TEXT_COLS, distill_table

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

# autoescape=True rather than select_autoescape(): the template's name ends in .j2, not .html, so the
# extension-based default would leave it unescaped. StrictUndefined: a misspelt context key fails the
# render instead of silently dropping a section.
TEMPLATES = Environment(loader=PackageLoader("vitedge.report", "templates"), autoescape=True,
                        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
BANNER_CLASS = {True: "pass", False: "fail", None: "none"}


def _cell_class(header: str, text: str) -> str:
    """'l' for text columns, 'status' for the status column (coloured per row), 'FAIL' for a row over budget."""
    classes = []
    if header in TEXT_COLS:
        classes.append("l")
    if header == "status":
        classes.append("status")
    if text == "FAIL":
        classes.append("FAIL")
    return " ".join(classes)


def table_context(headers: list[str], rows: list[list[str]], row_classes: list[str] | None = None
                  ) -> dict[str, Any]:
    """A table as the template's `table` macro takes it; `row_classes` (the statuses) colour whole rows."""
    return {
        "headers": [{"text": h, "css": "l" if h in TEXT_COLS else ""} for h in headers],
        "rows": [{"css": row_classes[i] if row_classes else "",
                  "cells": [{"text": c, "css": _cell_class(h, c)} for h, c in zip(headers, cells)]}
                 for i, cells in enumerate(rows)],
    }


def _optional_table(table: tuple[list[str], list[list[str]]]) -> dict[str, Any] | None:
    """None for a table without rows: the template says "Nothing measured." instead."""
    return table_context(*table) if table[1] else None


def figure_images(figures: list[tuple[str, str, bytes]], section: str) -> list[dict[str, str]]:
    """The figures of one section as {name, data URI}: embedded so the page needs no files beside it."""
    return [{"name": name, "uri": "data:image/png;base64," + base64.b64encode(png).decode()}
            for sec, name, png in figures if sec == section]


def _distill_context(distill: dict[str, Any] | None) -> dict[str, Any] | None:
    if not distill:
        return None
    header_row, rows, caption = distill_table(distill)
    return {"caption": caption, "table": table_context(header_row, rows)}


def _datacard_context(datacard: dict[str, Any] | None) -> dict[str, Any] | None:
    card = datacard_section(datacard)
    if not card:
        return None
    return {**card, "table": table_context(*card["table"]), "note": DATACARD_NOTE}


def render_html(title: str, s: dict[str, Any], figures: list[tuple[str, str, bytes]],
                distill: dict[str, Any] | None, datacard: dict[str, Any] | None = None) -> str:
    """index.html: `s` is vitedge.report.summarise's summary, `figures` make_figures' PNGs."""
    return TEMPLATES.get_template("report.html.j2").render(
        title=title, css=Markup(CSS),  # our own constant: marked safe so CSS selectors such as ">" survive
        summary=s, banner=BANNER_CLASS[s["passed"]],
        matrix=table_context(*s["matrix"]), compare=_optional_table(s["compare"]),
        speedups=_optional_table(s["speedups"]), speedup_note=SPEEDUP_NOTE,
        pareto=figure_images(figures, "pareto"), confusion=figure_images(figures, "confusion"),
        distill=_distill_context(distill), card=_datacard_context(datacard),
    )
