"""Where data sources live on disk, how files land there, and the error for a missing source."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from lipkit.errors import LipkitError


T = TypeVar("T")


class DataSourceError(LipkitError, RuntimeError):
    """A data source could not be found, fetched or read; the message says how to fix it."""


def cache_dir() -> Path:
    """`$LIPKIT_CACHE`, else `~/.cache/lipkit`. Not created here."""
    env = os.environ.get("LIPKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lipkit"


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy `src` to `dst` so that `dst` is either absent or complete, even with concurrent
    writers (several ranks fetching at once): write a temp file beside `dst`, then rename."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; cached data is meant to be shared
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetched_again(folder: Path, fetch: Callable[[], T]) -> T:
    """`fetch()` into an emptied `folder` (a source's cache), the copy there kept aside beside it
    until the fetch succeeds and put back when it fails: `lipkit data fetch --force` loses nothing
    to a failed download."""
    aside = folder.with_name(f".{folder.name}.previous")
    shutil.rmtree(aside, ignore_errors=True)  # left by a fetch killed before it could clean up
    had = folder.exists()
    if had:
        os.replace(folder, aside)
    try:
        result = fetch()
    except BaseException:
        if had:
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(aside, folder)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return result
