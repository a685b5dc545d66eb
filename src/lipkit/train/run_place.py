"""Where a run's files go while it trains, and the lock that makes this process their one writer.

`RunPlace(run_dir)` is entered before anything is read from the run directory (it locks a run
directory that exists, see lipkit.runs.lock); `open()` is called once the whole run has been
validated (config, data, resume state) and before anything is written. It picks:

- the run directory itself, for a new run, a run resumed in place, and an attempt that ended
  before its first checkpoint: that has no weights to lose, so its config.yaml, tokenizer.json
  and metrics.jsonl are cleared (with a note) and the corrected command needs no --overwrite;
- with --overwrite of a run that has weights: a staging directory beside it, `.NAME.incoming`.
  The old run stays whole and usable where it is until the new one has written its first
  checkpoint; `commit()` then swaps them (old -> `.NAME.replaced`, staging -> NAME, old deleted).
  A new run that fails before that leaves the old one as it was and its staging is removed (one
  killed leaves a staging directory that the next writer removes; one killed between the two
  renames of the swap is finished by the next writer; a second rename that fails puts the old run
  back and leaves the new one in its staging directory, with an error saying so, and so does a
  first rename that fails). A run directory that is a mount point cannot be renamed at all: an
  --overwrite of one is refused before training.

Only the writer (rank 0) locks and writes; on other ranks the place is the run directory and
does nothing."""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from lipkit.errors import LipkitError
from lipkit.files import is_mount_point
from lipkit.runs.directory import CHECKPOINTS_DIR, CONFIG_FILE, MODEL_FILE, OBJECTIVE_FILE, TOKENIZER_FILE, list_checkpoints
from lipkit.runs.lock import RunLock

METRICS_FILE = "metrics.jsonl"
DATA_REPORT_FILE = "data_report.json"
TENSORBOARD_DIR = "tensorboard"
# what a training run writes into its directory (results.json and the user's own files are not touched)
_RUN_ENTRIES = (CONFIG_FILE, TOKENIZER_FILE, MODEL_FILE, OBJECTIVE_FILE, METRICS_FILE, DATA_REPORT_FILE,
                TENSORBOARD_DIR, CHECKPOINTS_DIR)

log = logging.getLogger("lipkit.train")


class RunDirError(LipkitError, RuntimeError):
    """The run directory already holds a run that training would overwrite."""


def holds_run(run_dir: Path) -> bool:
    """A run with weights: model.safetensors or a complete checkpoint."""
    return (run_dir / MODEL_FILE).is_file() or bool(list_checkpoints(run_dir))


def _beside(run_dir: Path, kind: str) -> Path:
    path = Path(os.path.abspath(run_dir))
    return path.parent / f".{path.name}.{kind}"


def _finish_interrupted_swap(run_dir: Path) -> None:
    aside = _beside(run_dir, "replaced")
    if not aside.exists():
        return
    if not run_dir.exists():  # killed between the two renames of commit(): the new run had its checkpoint
        staging = _beside(run_dir, "incoming")
        os.replace(staging if staging.is_dir() else aside, run_dir)
    shutil.rmtree(aside, ignore_errors=True)


def _clear_unfinished(run_dir: Path) -> None:
    found = [name for name in _RUN_ENTRIES if (run_dir / name).exists()]
    if not found:
        return
    log.warning("lipkit: note: %s holds an attempt that ended before its first checkpoint (%s); starting again",
                run_dir, ", ".join(found))
    for name in found:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


class RunPlace:
    def __init__(self, run_dir: Path, writer: bool = True):
        self.final = Path(run_dir)
        self.path = self.final  # where files go now: the run directory, or its staging directory
        self.writer = writer
        self._locks: list[RunLock] = []
        self._staging = False
        self._on_move: list[Callable[[Path], None]] = []

    def __enter__(self) -> RunPlace:
        if self.writer:
            _finish_interrupted_swap(self.final)
            if self.final.is_dir():
                self._locks.append(RunLock(self.final))
        return self

    def __exit__(self, *exc) -> None:
        if self._staging:  # ended before its first checkpoint: the old run is untouched, drop the attempt
            shutil.rmtree(self.path, ignore_errors=True)
            self._staging = False
        for lock in self._locks:
            lock.release()
        self._locks = []

    def open(self, *, overwrite: bool, resuming: bool) -> Path:
        """Decide where the run is written (see the module docstring); returns that directory."""
        if not self.writer:
            return self.path
        if resuming and overwrite:
            raise RunDirError(f"{self.final}: --overwrite would replace the run that --resume continues; pass one of them")
        self.final.mkdir(parents=True, exist_ok=True)
        if not self._locks:
            self._locks.append(RunLock(self.final))
        staging = _beside(self.final, "incoming")
        if staging.exists():  # an --overwrite killed before its first checkpoint
            shutil.rmtree(staging)
        if resuming:
            return self.path
        if not holds_run(self.final):
            _clear_unfinished(self.final)
            return self.path
        if not overwrite:
            existing = [name for name in (CONFIG_FILE, MODEL_FILE, METRICS_FILE, CHECKPOINTS_DIR)
                        if (self.final / name).exists()]
            raise RunDirError(
                f"{self.final} already holds a run ({', '.join(existing)}); choose another --out, pass --overwrite, "
                f"or continue it with --resume latest"
            )
        if is_mount_point(self.final):
            raise RunDirError(f"--overwrite: {self.final} is a mount point, which cannot be renamed: the new run, "
                              f"written beside the old one, could not take its place; delete the old run's files "
                              f"in it first, or write the new run into a folder inside it")
        try:
            staging.mkdir()
        except OSError as e:
            raise RunDirError(f"--overwrite: cannot create {staging} to write the new run beside the old one "
                              f"({e.strerror or e})") from None
        self._locks.append(RunLock(staging))
        self.path, self._staging = staging, True
        return self.path

    def on_move(self, callback: Callable[[Path], None]) -> None:
        """Call `callback(run_dir)` when a run written beside the one it replaces takes its place."""
        self._on_move.append(callback)

    def commit(self) -> bool:
        """After each checkpoint. The first one of a run written beside the run it replaces puts it
        in that run's place (the old run is deleted); True when it moved."""
        if not self._staging:
            return False
        aside = _beside(self.final, "replaced")
        try:
            os.replace(self.final, aside)
        except OSError as e:
            self._staging = False  # keep the new run's checkpoint where it is for the user
            raise RunDirError(
                f"--overwrite: cannot move the old run {self.final} aside ({e.strerror or e}); it is as it was, and "
                f"the new one stays in {self.path} (the next run into {self.final} removes it)") from None
        try:
            os.replace(self.path, self.final)
        except OSError as e:
            os.replace(aside, self.final)
            self._staging = False  # keep the new run's checkpoint where it is for the user
            raise RunDirError(
                f"--overwrite: cannot move the new run from {self.path} to {self.final} ({e.strerror or e}); "
                f"the old run is back in place and the new one stays in {self.path} (the next run into "
                f"{self.final} removes it)") from None
        shutil.rmtree(aside, ignore_errors=True)
        self.path, self._staging = self.final, False
        for callback in self._on_move:
            callback(self.final)
        return True
