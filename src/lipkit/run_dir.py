"""Moved to lipkit.runs.directory (kept for one release; see lipkit.moved)."""
from lipkit.moved import forward

__getattr__ = forward("lipkit.run_dir", "lipkit.runs.directory")
