"""Moved to lipkit.runs.lock (kept for one release; see lipkit.moved)."""
from lipkit.moved import forward

__getattr__ = forward("lipkit.run_lock", "lipkit.runs.lock")
