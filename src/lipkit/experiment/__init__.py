"""`lipkit experiment FILE.yaml --out DIR`: a grid of (dataset × setting × batch size × seed)
training runs, each evaluated on every task, summarised over seeds, with claims judged from the
numbers (spec, metrics, grid, runner, summary, claims, plots, page)."""
from .spec import ExperimentSpec, load_spec  # noqa: F401
