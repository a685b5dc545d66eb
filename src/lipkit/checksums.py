"""Moved to lipkit.runs.checksums (kept for one release; see lipkit.moved)."""
from lipkit.moved import forward

__getattr__ = forward("lipkit.checksums", "lipkit.runs.checksums")
