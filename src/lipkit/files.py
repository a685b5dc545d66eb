"""Writing files so that a reader never sees half of one: `atomic_write` (a temporary file renamed
into place), `write_json` (the same for a JSON document), `staged_directory` (a whole folder or
nothing; what a killed writer left is cleared by the next), and `fsync`.

The ground floor: imports nothing of lipkit, so every layer (data, models, train, eval) can use it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
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


# A staging folder: `.OUT.lipkit-XXXXXXXX.tmp` beside OUT, locked (flock) by its writer for as long
# as that process lives, so a later writer tells one a killed process left by its free lock.
_STAGING = re.compile(r"^\..*\.lipkit-[a-z0-9_]+\.tmp$")


def _lock_folder(path: Path) -> int:
    """A descriptor of `path` holding its flock (BlockingIOError when another one holds it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _new_staging(parent: Path, name: str) -> tuple[Path, int | None]:
    """A new staging folder for `name` in `parent`, and the descriptor holding its lock. It gets its
    `.tmp` name only once locked, so no staging folder is ever seen unlocked while its writer lives.
    Where folders cannot be locked (some network file systems), it is not, and no later writer
    takes it for stale: it is only left behind if this process is killed."""
    new = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.lipkit-", suffix=".new"))
    try:
        fd = _lock_folder(new)
    except OSError:
        fd = None
    tmp = new.with_suffix(".tmp")
    try:
        os.rename(new, tmp)
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp's 0700 would hide the folder from the user's group
    except BaseException:
        if fd is not None:
            os.close(fd)
        shutil.rmtree(tmp if tmp.exists() else new, ignore_errors=True)
        raise
    return tmp, fd


def remove_stale_staging(parent: Path) -> list[Path]:
    """Delete the staging folders in `parent` that killed writers left (their lock is free); a
    live writer's is kept. Returns what was deleted."""
    try:
        entries = [p for p in Path(parent).iterdir() if _STAGING.match(p.name)]
    except OSError:
        return []
    removed = []
    for path in entries:
        if path.is_symlink() or not path.is_dir():
            continue
        try:
            fd = _lock_folder(path)
        except OSError:  # held by a live writer, gone already, or on a file system without folder locks
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def is_mount_point(path: Path) -> bool:
    """A folder with another file system mounted on it (a Docker volume, a tmpfs, a bind mount),
    which can be neither renamed nor removed, only filled."""
    path = Path(path)
    if os.path.ismount(path):
        return True
    real = os.path.realpath(path)
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    unescape = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space as \040
    return any(len(f := line.split()) > 4 and unescape.sub(lambda m: chr(int(m.group(1), 8)), f[4]) == real
               for line in lines)


@contextlib.contextmanager
def staged_directory(out: Path, *, replace: bool = False,
                     refuse: Callable[[str], BaseException] = FileExistsError) -> Iterator[Path]:
    """Yield a hidden staging folder beside `out` that becomes `out` when the block succeeds;
    when it fails, nothing of it is left, and one a killed process left is deleted by the next
    writer into the same folder. With `replace`, an `out` that exists is replaced whole (it stays
    as it was until the rename); without, `out` must not exist yet or be an empty folder, else
    `refuse(message)` is raised before anything is written. An empty `out` that is a mount point
    cannot be renamed over: the staging folder is made inside it, and its entries are moved up."""
    out = Path(out)
    into_mount = not replace and out.is_dir() and is_mount_point(out)
    if into_mount:
        remove_stale_staging(out)
    if not replace and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise refuse(f"{out}: already exists and is not an empty directory; choose another output")
    parent = out if into_mount else out.parent
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(parent)
    tmp, lock = _new_staging(parent, out.name)
    try:
        yield tmp
        if into_mount:
            for entry in sorted(tmp.iterdir()):
                os.replace(entry, out / entry.name)
        elif replace and out.exists():
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
        if lock is not None:
            os.close(lock)
