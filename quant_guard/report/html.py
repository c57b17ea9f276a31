"""The HTML report: ``index.html`` in the report directory, rendered from ``results.json`` by
Jinja2 templates with autoescape (prompts and failure messages are user text).

Self-contained: CSS and JavaScript are inlined, every image is a file inside the report folder
(the golden is copied there when the record is built), so an unzipped CI artifact opens as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant_guard.report.records import read_results
from quant_guard.report.schemes_view import scheme_comparisons
from quant_guard.report.view import build_view, case_view

if TYPE_CHECKING:
    import jinja2

    from quant_guard.report.trends import TrendsView

INDEX_NAME = "index.html"
TRENDS_NAME = "trends.html"
TEMPLATES = Path(__file__).parent / "templates"


@cache
def templates() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template: there is no output that may carry raw user text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_index(document: Mapping[str, Any], artifacts: Mapping[str, dict[str, Any]] | None = None,
                 trends: TrendsView | None = None) -> str:
    """index.html; with ``trends`` (the metrics history), each case shows its sparklines and the
    page the tests that moved most; a checkpoint with several schemes gets their comparison."""
    return templates().get_template("index.html.j2").render(
        view=build_view(document, artifacts), trends=trends,
        schemes=scheme_comparisons(document.get("results", [])),  # per checkpoint with 2+ schemes
    )


def render_trends(trends: TrendsView, source: str) -> str:
    """The trend page of a whole history (``quant-guard history DIR report``)."""
    return templates().get_template("trends_page.html.j2").render(trends=trends, source=source)


def render_extras_table(record: Mapping[str, Any], report_link: str | None = None) -> str:
    """The metric table that pytest-html shows for a failing test."""
    return templates().get_template("extras.html.j2").render(c=case_view(record, {}), report_link=report_link)


def make_artifacts(report_dir: Path, records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Heatmaps and zoomed crops of every case that has a golden and a candidate image; a case
    whose images cannot be read gets {"error": ...} and the rest of the report is still written."""
    from quant_guard.judge.regions import case_artifacts

    out: dict[str, dict[str, Any]] = {}
    for record in records:
        images = record.get("images") or {}
        if "golden" not in images or "candidate" not in images:
            continue
        golden, candidate = report_dir / images["golden"], report_dir / images["candidate"]
        try:
            out[record["id"]] = case_artifacts(golden, candidate, candidate.parent)
        except Exception as exc:  # a damaged PNG must not cost the whole report
            out[record["id"]] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def write_report(report_dir: Path, trends: TrendsView | None = None) -> Path:
    """Render ``index.html`` from the ``results.json`` in ``report_dir`` (written atomically)."""
    from quant_guard.store.atomic import atomic_write

    document = read_results(report_dir)
    artifacts = make_artifacts(report_dir, document.get("results", []))
    path = report_dir / INDEX_NAME
    atomic_write(path, render_index(document, artifacts, trends).encode("utf-8"))
    return path
