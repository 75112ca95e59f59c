"""Write a comparison's three files: report.json, report.md and report.html.

This is what ``tiosim compare`` calls once every model of the scenario has run. The input is
checked before anything is written, so a malformed result leaves no partial report behind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from sim.report.compare import Comparison, compare
from sim.report.html import render_html
from sim.report.markdown import render_markdown
from sim.report.plots import report_plots


class ReportPaths(NamedTuple):
    markdown: Path
    html: Path
    json: Path


class RenderedReport(NamedTuple):
    comparison: Comparison
    markdown: str
    html: str
    json: str


def render_report(results: Sequence[Mapping[str, object]] | Mapping[str, object]) -> RenderedReport:
    """Compute the comparison and render every format in memory (no files)."""
    cmp = compare(results)
    plots = report_plots(cmp)
    return RenderedReport(cmp, render_markdown(cmp, list(plots)), render_html(cmp, plots), cmp.to_json_text())


def write_report(results: Sequence[Mapping[str, object]] | Mapping[str, object], out_dir: str | Path) -> ReportPaths:
    """Compare the results (dicts loaded from result.json) and write the report files into ``out_dir``.

    Raises :class:`sim.report.compare.ReportInputError` (naming the key path) on a malformed result.
    """
    rendered = render_report(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(out / "report.md", out / "report.html", out / "report.json")
    for path, text in ((paths.markdown, rendered.markdown), (paths.html, rendered.html), (paths.json, rendered.json)):
        path.write_text(text, encoding="utf-8", newline="\n")
    return paths
