"""Moved to lipkit.interop.gateway (kept for one release; see lipkit.moved)."""
from lipkit.moved import forward

__getattr__ = forward("lipkit.bench.peer", "lipkit.interop.gateway", {"PeerUnavailable": "OpenClipUnavailable"})
