"""`lipkit experiment FILE.yaml --out DIR`: a grid of (dataset × setting × batch size × seed)
training runs, each evaluated on every task, summarised over seeds, with claims judged from the
numbers (spec, metrics, grid, runner, summary, claims, plots, page)."""
from lipkit.faces import lazy_face

_HOMES = {"ExperimentSpec": "spec", "load_spec": "grid"}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
