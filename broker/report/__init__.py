"""`qtestbed report`: a facility's transparency report, read from the broker's own store.

collect (`collect`, `source`) -> a typed `Report` (`model`, built by `build` with small counts
suppressed by `privacy`) -> Markdown, JSON or CSV (`render_md`, `render_json`, `render_csv`).
"""

from __future__ import annotations

from broker.report.collect import ReportError, collect
from broker.report.model import Report
from broker.report.render_csv import render_csv
from broker.report.render_json import render_json
from broker.report.render_md import render_markdown

RENDERERS = {"md": render_markdown, "json": render_json, "csv": render_csv}

__all__ = [
    "RENDERERS",
    "Report",
    "ReportError",
    "collect",
    "render_csv",
    "render_json",
    "render_markdown",
]
