"""Every process must see the run directory that rank 0 writes.

Checkpoints are written by rank 0 and read back by every rank on `--resume`; a run directory on a
disk local to each node (`/tmp`, a node-local scratch) would have every other node resume from
nothing, or from a stale copy, while rank 0 resumes from its newest checkpoint. So before anything
is read or written, rank 0 writes a check file with a token unique to this launch into the run
directory (into its nearest existing folder when it does not exist yet, which is where it will be
created), every rank looks for it under its own `--out`, and the file is removed again. A rank
that does not find it stops every rank in one line that names the directory, the rank and its
host; nothing else has been written. The same check, in one process, is only `check_writable`.

Then, once each rank has picked the checkpoint `--resume` names (`same_checkpoint_everywhere`),
all of them must have picked the same one; a shared filesystem whose caches show one node an
older listing than another would otherwise resume ranks from different steps."""
from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import torch.distributed as dist

from lipkit.distributed import DistInfo
from lipkit.errors import LipkitError
from lipkit.writable import NotWritableError, check_writable

CHECK_PREFIX = ".lipkit-shared-check-"
# A network filesystem may show a new file to the other nodes a moment late; each rank looks again
# for this long before it reports that it cannot see the file.
VISIBLE_WITHIN_S = 2.0
_SHOWN = 4  # ranks named in the error before "and N more"


class RunDirNotSharedError(LipkitError, RuntimeError):
    """A rank cannot see the run directory rank 0 writes, or resumes from another checkpoint."""


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _look(run_dir: Path, name: str, token: str) -> tuple[bool, Path]:
    """(whether the check file holding `token` is visible, the folder it was looked for in)."""
    deadline = time.monotonic() + VISIBLE_WITHIN_S
    while True:
        where = _nearest_existing(run_dir)
        try:
            if (where / name).read_text(encoding="ascii") == token:
                return True, where
        except (OSError, UnicodeDecodeError):
            pass
        if time.monotonic() >= deadline:
            return False, where
        time.sleep(0.1)


def check_run_dir(run_dir: str | Path, info: DistInfo, what: str = "--out") -> None:
    """`run_dir` can be written by rank 0 (`check_writable`) and is the same directory for every
    rank (module docstring). Every rank must call it; every rank raises the same error."""
    if info.world_size == 1:
        check_writable(run_dir, what)
        return
    run_dir = Path(os.path.abspath(run_dir))  # each rank's own: nodes may start in different folders
    # rank 0: (token, folder written in, host) or (None, error, host); sent to every rank
    message: list = [None]
    if info.is_main:
        token = uuid.uuid4().hex
        try:
            check_writable(run_dir, what)
            where = _nearest_existing(run_dir)
            with open(where / f"{CHECK_PREFIX}{token}", "x", encoding="ascii") as f:
                f.write(token)
                f.flush()
                os.fsync(f.fileno())
            message = [(token, str(where), socket.gethostname())]
        except (NotWritableError, OSError) as e:
            reason = str(e) if isinstance(e, NotWritableError) else f"{what} {run_dir}: {e.strerror or e}"
            message = [(None, reason, socket.gethostname())]
    dist.broadcast_object_list(message, src=0)
    token, written_in, main_host = message[0]
    if token is None:
        raise NotWritableError(written_in if info.is_main else f"rank 0 (host {main_host}): {written_in}")
    name = f"{CHECK_PREFIX}{token}"
    seen, where = _look(run_dir, name, token) if not info.is_main else (True, Path(written_in))
    views: list = [None] * info.world_size
    dist.all_gather_object(views, (seen, socket.gethostname(), str(where)))
    if info.is_main:  # every rank has looked: the check leaves nothing behind
        try:
            os.unlink(Path(written_in) / name)
        except OSError:
            pass
    blind = [(rank, host, folder) for rank, (ok, host, folder) in enumerate(views) if not ok]
    if blind:
        named = ", ".join(f"rank {rank} (host {host}) found nothing in {folder}" for rank, host, folder in blind[:_SHOWN])
        more = f", and {len(blind) - _SHOWN} more ranks" if len(blind) > _SHOWN else ""
        raise RunDirNotSharedError(
            f"{what} {run_dir}: not every process sees the run directory: rank 0 (host {main_host}) wrote a check "
            f"file into {written_in}, but {named}{more}; put the run directory on a filesystem every node mounts "
            f"(rank 0 writes the checkpoints, every rank reads them to resume)")


def same_checkpoint_everywhere(checkpoint: Path | None, world_size: int) -> None:
    """Every rank resolved `--resume` to the same checkpoint (compared by its folder name, since
    nodes may mount the run directory at different paths); else one line naming what each saw."""
    if world_size == 1:
        return
    names: list = [None] * world_size
    dist.all_gather_object(names, None if checkpoint is None else Path(checkpoint).name)
    if len(set(names)) > 1:
        seen = ", ".join(f"rank {rank}: {name or 'no checkpoint'}" for rank, name in enumerate(names))
        raise RunDirNotSharedError(
            f"--resume: the processes found different checkpoints to continue from ({seen}); the run directory "
            f"must show every node the same files (a network filesystem's cache may still hide rank 0's newest "
            f"checkpoint from some nodes: start again in a moment)")
