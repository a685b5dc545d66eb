"""Moved to lipkit.runs.loading (kept for one release; see lipkit.moved)."""
from lipkit.moved import forward

__getattr__ = forward("lipkit.loading", "lipkit.runs.loading")
