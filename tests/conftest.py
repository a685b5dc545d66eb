"""Fixtures shared by several test modules (each module still gets its own module-scoped run)."""
from _tiny_runs import finished_run, old_run  # noqa: F401  (fixtures: tests/_tiny_runs.py)
