"""Write a whole output folder or nothing: into a hidden sibling first, renamed into place once
every file is written and checked."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .layout import InteropError


@contextlib.contextmanager
def staged_directory(out: Path) -> Iterator[Path]:
    """Yield a temporary folder that becomes `out` when the block succeeds. `out` must not exist
    yet or be empty: nothing already there is replaced."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InteropError(f"{out}: already exists and is not an empty directory; choose another output")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp's 0700 would hide the folder from the user's group
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
