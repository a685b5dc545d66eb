"""The evaluation report: `build_report(runs, "report.html")` writes one self-contained HTML page
with PNG figures (training curves, per-task bars, retrieval recall curves, robustness curves,
prototype usage) for one or more runs."""
from .collect import ReportError, RunData, load_source, load_sources
from .html import build_report, render

__all__ = ["ReportError", "RunData", "build_report", "load_source", "load_sources", "render"]
