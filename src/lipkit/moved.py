"""Old import paths that still work for one release: `lipkit.run_dir`, `lipkit.loading`,
`lipkit.run_lock` and `lipkit.checksums` moved into `lipkit.runs`, and `lipkit.bench.peer` into
`lipkit.interop.gateway` (2026-12). Each old module forwards attribute reads to the new home with
a DeprecationWarning naming it. Imports nothing of lipkit."""
from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable


def forward(old: str, new: str, renamed: dict[str, str] | None = None) -> Callable[[str], object]:
    """A module `__getattr__` for `old` that reads from `new` (`renamed`: old name -> new name)
    with a DeprecationWarning."""
    renamed = renamed or {}

    def __getattr__(name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        where = f"{new}.{renamed[name]}" if name in renamed else new
        warnings.warn(f"{old}.{name} moved to {where}; the old path goes in the next release", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module(new), renamed.get(name, name))

    return __getattr__
