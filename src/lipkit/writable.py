"""Can a command write where it was told to? Asked before any long work, so a read-only, missing
or mistyped output location is one line at once, not a traceback after the work is done."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lipkit.errors import LipkitError


class NotWritableError(LipkitError, RuntimeError):
    """An output location that cannot be written, named with the reason."""


def check_writable(folder: str | Path, what: str) -> None:
    """`folder` (created later when missing) can hold new files: its nearest existing ancestor is
    a folder in which a file can really be created (permission bits do not tell: root ignores
    them, a read-only mount does not show in them). `what` names the option in the error."""
    folder = Path(folder)
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotWritableError(f"{what} {folder}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".lipkit-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise NotWritableError(f"{what} {folder}: cannot write in {existing} ({e.strerror or e})") from None
