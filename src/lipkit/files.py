"""Writing files so that a reader never sees half of one: `atomic_write` (a temporary file renamed
into place), `write_json` (the same for a JSON document), `staged_directory` (a whole folder or
nothing), and `fsync`.

The ground floor: imports nothing of lipkit, so every layer (data, models, train, eval) can use it.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp_path)` then rename onto `path`: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp's 0600 would hide the run from the user's group
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any, *, indent: int | None = 1, allow_nan: bool = True) -> None:
    """`obj` as a JSON document (UTF-8, ending in a newline) at `path`, written atomically.
    `allow_nan=False` refuses NaN and infinities (strict JSON) with a ValueError."""
    text = json.dumps(obj, indent=indent, allow_nan=allow_nan) + "\n"
    atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def fsync(path: Path) -> None:
    """Flush a file or a folder (its entries: a rename in it) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged_directory(out: Path, *, replace: bool = False,
                     refuse: Callable[[str], BaseException] = FileExistsError) -> Iterator[Path]:
    """Yield a hidden temporary folder beside `out` that becomes `out` when the block succeeds;
    when it fails, nothing of it is left. With `replace`, an `out` that exists is replaced whole
    (it stays as it was until the rename); without, `out` must not exist yet or be an empty
    folder, else `refuse(message)` is raised before anything is written."""
    out = Path(out)
    if not replace and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise refuse(f"{out}: already exists and is not an empty directory; choose another output")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp's 0700 would hide the folder from the user's group
        yield tmp
        if replace and out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if out.exists():
                out.rmdir()
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
