"""How every lipkit package shows its public names: lazily. A package's `__init__` holds a table
`_HOMES = {public name: submodule}` and `__getattr__, __dir__ = lazy_face(__name__, _HOMES)`; a
name's submodule is imported the first time the name is read.

Why lazy, everywhere: `lipkit --help` and the cheap modules (config, data.builtins, the task names)
must not load torch, and an eager `from .x import y` in a package's `__init__` runs whenever any
of its submodules is imported, which is how import cycles and slow start-ups creep in. One
pattern keeps every face the same to read, and the table is plain data that
tests/test_layering.py reads as import edges (package -> submodule) when it checks for cycles.
Imports nothing of lipkit."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_face(package: str, homes: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """(__getattr__, __dir__) for `package`. `homes[name]` is the submodule defining `name`; a name
    that is its own home is that submodule."""

    def __getattr__(name: str) -> object:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{homes[name]}")
        value = module if homes[name] == name else getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(homes))

    return __getattr__, __dir__
