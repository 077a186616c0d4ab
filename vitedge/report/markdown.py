"""The report as Markdown (report.md): the same sections and tables as index.html, plots linked as the
PNG files written beside it rather than embedded."""
from __future__ import annotations

from typing import Any

from vitedge.report.summary import DATACARD_NOTE, SPEEDUP_NOTE, datacard_section
from vitedge.report.tables import distill_table, markdown_table


def _images(figures: list[tuple[str, str, bytes]], section: str) -> list[str]:
    return [f"![{name}]({name})" for sec, name, _ in figures if sec == section]


def _tables_section(s: dict[str, Any]) -> list[str]:
    """Validation matrix (+ one line per reason rows were skipped), teacher vs student vs int8 (+ peers), speed-up
    per runtime."""
    return ["## Validation matrix", "", s["notes"], "", markdown_table(*s["matrix"][:2]), "",
            *[f"- {line}" for line in s["skipped"]], *([""] if s["skipped"] else []),
            "## Teacher vs student vs int8", "",
            markdown_table(*s["compare"]) if s["compare"][1] else "Nothing measured.",
            *(["", s["peers"]] if s.get("peers") else []),
            "", "## Speed-up per runtime", "", SPEEDUP_NOTE, "",
            markdown_table(*s["speedups"]) if s["speedups"][1] else "Nothing measured."]


def _datacard_section(card: dict[str, Any]) -> list[str]:
    md = ["", "## Data card", "", f"{card['source']}. {DATACARD_NOTE}", "", markdown_table(*card["table"]), ""]
    return md + ([f"- WARNING {w}" for w in card["warnings"]] or ["No data card warnings."])


def render_markdown(title: str, s: dict[str, Any], figures: list[tuple[str, str, bytes]],
                    distill: dict[str, Any] | None, datacard: dict[str, Any] | None = None) -> str:
    """report.md: `s` is vitedge.report.summarise's summary, `figures` make_figures' PNGs (linked by name)."""
    card = datacard_section(datacard)
    md = [f"# {title}", "", f"generated {s['generated']}", "", f"**{s['summary']}**", ""]
    if card and card["warnings"]:
        md += [f"**⚠ data card: {len(card['warnings'])} warning(s) about the data these models were trained and "
               "tested on: see Data card below.**", ""]
    md += ["## Budget verdicts", "", f"Budgets: {s['budget_text']}.", ""]
    md += [f"- FAIL {f}" for f in s["failures"]] or ["No row is over budget."]
    md += ["", *_tables_section(s), "", "## Accuracy vs latency", ""]
    md += [f"- **{t}**: nothing measured here ({'; '.join(why)})." for t, why in s["unmeasured"].items()]
    md += ["", *_images(figures, "pareto"), "", "## Confusion matrices", "", *_images(figures, "confusion")]
    if distill:
        header_row, rows, caption = distill_table(distill)
        md += ["", "## Distillation", "", caption, "", markdown_table(header_row, rows)]
    if card:
        md += _datacard_section(card)
    md += ["", "## Where each number was measured", ""]
    md += [f"- **{mid}**: {line}" for mid, line in s["machines"].items()]
    if s["libraries"]:
        md += ["", f"libraries: {s['libraries']}"]
    return "\n".join(md) + "\n"
