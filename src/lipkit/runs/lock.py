"""One writer per run directory: an advisory lock (`fcntl.flock`) on `RUN/.lock`, held while a
process trains into RUN. The OS releases it when the process ends, however it ends (a crash,
`kill -9`), so there is never a stale lock to clear by hand. The holder writes its PID into the
file, and a second writer's error names it.

Forked children (data-loader workers) close their copy of the lock at once: they share the
parent's open file, which would otherwise keep the run locked for the seconds a worker takes to
notice that its parent was killed."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from lipkit.errors import LipkitError

LOCK_FILE = ".lock"
_held: set[int] = set()  # descriptors of the locks this process holds


def _close_in_child() -> None:
    for fd in _held:
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


class RunLockedError(LipkitError, RuntimeError):
    """Another live process is writing the run directory."""


class RunLock:
    """Holds the lock of `run_dir` (which must exist) until `release()` or the process ends."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        fd = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(
                f"{self.run_dir} is being written by another lipkit process (PID {holder}); two writers would "
                f"overwrite each other's checkpoints: wait for it to end, stop it, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd: int | None = fd
        _held.add(fd)

    def release(self) -> None:
        if self.fd is not None:
            _held.discard(self.fd)
            os.close(self.fd)  # closing the last descriptor of the open file releases the lock
            self.fd = None
