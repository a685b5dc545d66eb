"""The evaluation report: `build_report(runs, "report.html")` writes one self-contained HTML page
with PNG figures (training curves, per-task bars, retrieval recall curves, robustness curves,
prototype usage) for one or more runs."""
from lipkit.faces import lazy_face

_HOMES = {"ReportError": "collect", "RunData": "collect", "load_source": "collect", "load_sources": "collect", "build_report": "html", "render": "html"}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
