"""The run-directory format: what a run directory and its checkpoints hold, and reading and
writing them. Imports config and the file helpers, never models (loading a model is
lipkit.runs.loading's job).

A run directory holds `config.yaml`, `tokenizer.json`, `model.safetensors` (the newest weights)
and `objective.safetensors`, each written atomically, and `checkpoints/step-NNNNNNNN`, the
checkpoints a run resumes from. A checkpoint directory is itself a run directory (config,
tokenizer, model, objective) plus `trainer.pt` (optimizer, scheduler, scaler, step, RNG states,
data position; read with `torch.load(weights_only=True)`). It is written whole into a hidden
temporary directory and renamed into place, so a reader (or a resumed run after a crash) only ever
sees complete checkpoints; `manifest.json` holds each file's checksum (lipkit.runs.checksums), and a
resume passes over a damaged checkpoint to the newest intact one.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lipkit import distributed
from lipkit.runs.checksums import damage, write_manifest
from lipkit.config import ConfigError, RunConfig, load_config, save_config
from lipkit.errors import LipkitError
from lipkit.files import atomic_write, fsync, staged_directory, umask

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
OBJECTIVE_FILE = "objective.safetensors"
TRAINER_FILE = "trainer.pt"
CHECKPOINTS_DIR = "checkpoints"
_CHECKPOINT_NAME = re.compile(r"^step-(\d{8,})$")
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)|Os \{ code: (\d+)")  # Display, Debug
log = logging.getLogger("lipkit.runs.directory")


class CheckpointError(LipkitError, RuntimeError):
    """A run directory that cannot be loaded, stated in one line."""


class CheckpointWriteError(LipkitError, OSError):
    """A checkpoint that could not be written (disk full, read-only); the ones before it are intact."""


def save_run_config(cfg: RunConfig, run_dir: Path) -> None:
    atomic_write(run_dir / CONFIG_FILE, lambda p: save_config(cfg, p))


def save_model(model: torch.nn.Module, run_dir: Path) -> None:
    atomic_write(run_dir / MODEL_FILE, lambda p: write_tensors(model.state_dict(), p))


def as_os_error(error: BaseException | None, path: Path) -> OSError | None:
    """The OSError behind `error`, if any: Python's own (also when another exception replaced it, as
    torch.save's clean-up does), or a Rust writer's (safetensors, tokenizers), which reports a full
    disk as its own type with "(os error 28)" in the message."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        found = _RUST_OS_ERROR.search(str(error))
        if found:
            code = int(found.group(1) or found.group(2))
            return OSError(code, os.strerror(code), str(path))
        error = error.__cause__ or error.__context__
    return None


def write_tensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """A safetensors file, readable as every other file lipkit writes (safetensors makes it 0600);
    a full disk or another OS error is an OSError naming `path`."""
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path), metadata=metadata)
        os.chmod(path, 0o666 & ~umask())
    except Exception as e:
        os_error = as_os_error(e, path)
        if os_error is None:
            raise
        raise os_error from None


def write_torch(obj, path: Path) -> None:
    """torch.save through a Python file, so a full disk is an OSError (torch's own writer says only
    "unexpected pos")."""
    with open(path, "wb") as f:
        torch.save(obj, f)


def load_run_config(run_dir: Path) -> RunConfig:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: not a lipkit run directory (no {CONFIG_FILE})")
    try:
        return load_config(str(path), recorded=True)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None


def read_tensors(path: Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; `what` names them in the error when it cannot be read."""
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"{path}: cannot read {what} ({e})") from None


def load_state_into(model: torch.nn.Module, path: Path) -> None:
    """Load weights, refusing a checkpoint of another architecture with the keys that differ."""
    model.load_state_dict(weights_for(model, path))


def weights_for(model: torch.nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """The weights at `path`, refused with the keys that differ when they are of another
    architecture than `model`'s."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing model weights")
    state = read_tensors(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        if shape:
            parts.append("shape differs for " + _few([f"{k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in shape]))
        raise CheckpointError(f"{path}: checkpoint is for another architecture: " + "; ".join(parts))
    return state


def _few(items: list[str], n: int = 5) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


# --------------------------------------------------------------------------- checkpoint directories
def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def checkpoint_step(path: Path) -> int | None:
    m = _CHECKPOINT_NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if checkpoint_step(p) is not None and (p / TRAINER_FILE).is_file()]
    return sorted(found, key=checkpoint_step)


def write_checkpoint(run_dir: Path, step: int, files: dict[str, Callable[[Path], None]]) -> Path:
    """Write `files` (name -> write(path)) into RUN/checkpoints/step-N, atomically: into a hidden
    temporary directory first, renamed into place once every file is on disk."""
    # replace: the same step again (a run resumed from an older checkpoint)
    return write_staged(Path(run_dir) / CHECKPOINTS_DIR / checkpoint_name(step), files,
                        "the checkpoint", "the checkpoints before it are intact")


def write_staged(final: Path, files: dict[str, Callable[[Path], None]], what: str, intact: str) -> Path:
    """`files` (name -> write(path)) and their manifest into directory `final`, replacing it
    atomically (staged in a hidden directory, renamed once every file is on disk). A failure to
    write is one CheckpointWriteError: `final`: cannot write `what` (why); `intact`."""
    try:
        with staged_directory(final, replace=True) as tmp:
            for name, write in files.items():
                write(tmp / name)
                os.chmod(tmp / name, 0o666 & ~umask())
                fsync(tmp / name)
            fsync(write_manifest(tmp, files))
        fsync(final.parent)
    except BaseException as e:
        os_error = as_os_error(e, final)
        if os_error is not None:
            raise CheckpointWriteError(f"{final}: cannot write {what} ({os_error.strerror or os_error}); "
                                       f"{intact}") from None
        raise
    return final


def set_aside_later_checkpoints(run_dir: Path, step: int) -> Path | None:
    """A run resumed in place from step `step` takes again the steps after it: its checkpoints
    of those steps (an abandoned continuation) move to RUN/checkpoints/abandoned-after-step-N/,
    out of pruning's and `--resume latest`'s way, with a warning. Returns that folder, if any."""
    later = [p for p in list_checkpoints(run_dir) if checkpoint_step(p) > step]
    if not later:
        return None
    aside = Path(run_dir) / CHECKPOINTS_DIR / f"abandoned-after-step-{step:08d}"
    aside.mkdir(exist_ok=True)
    for path in later:
        target = aside / path.name
        if target.exists():
            shutil.rmtree(target)
        os.replace(path, target)
    log.warning("lipkit: warning: resuming %s from step %d: its later checkpoints (%s) were moved to %s",
                run_dir, step, ", ".join(p.name for p in later), aside)
    return aside


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Keep the newest `keep` checkpoints; also clear temporary directories a killed run left."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    for path in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)
    if root.is_dir():
        for stale in root.glob(".step-*"):
            shutil.rmtree(stale, ignore_errors=True)


def newest_intact_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint of `run_dir` whose files match their manifest, None when it has none
    yet. A damaged newer one is passed over with a warning naming it and why; when every one is
    damaged, that is an error."""
    damaged = []
    for path in reversed(list_checkpoints(run_dir)):
        why = damage(path)
        if why is None:
            for bad, reason in damaged if distributed.rank() == 0 else ():  # every rank checks, one says so
                log.warning("lipkit: warning: checkpoint %s is damaged (%s); resuming from %s instead",
                            bad, reason, path.name)
            return path
        damaged.append((path, why))
    if damaged:
        bad, reason = damaged[0]
        raise CheckpointError(f"{Path(run_dir) / CHECKPOINTS_DIR}: every checkpoint is damaged; the newest, "
                              f"{bad.name}: {reason}")
    return None


def resolve_resume(spec: str, run_dir: Path) -> Path | None:
    """`latest`: the newest intact checkpoint of `run_dir`, None when it holds none yet. A path: a
    checkpoint directory (refused when damaged), or a run directory whose newest intact checkpoint
    is taken."""
    if spec == "latest":
        return newest_intact_checkpoint(run_dir)
    path = Path(spec)
    if (path / TRAINER_FILE).is_file():
        why = damage(path)
        if why is not None:
            raise CheckpointError(f"--resume {spec}: the checkpoint is damaged ({why})")
        return path
    found = newest_intact_checkpoint(path)
    if found is not None:
        return found
    raise CheckpointError(f"--resume {spec}: not a checkpoint directory (no {TRAINER_FILE}) nor a run with checkpoints")


def load_trainer_state(checkpoint_dir: Path) -> dict:
    path = Path(checkpoint_dir) / TRAINER_FILE
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols: not the user's concern
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing trainer state") from None
    except pickle.UnpicklingError:
        # torch suggests weights_only=False here; for a file of unknown origin that would run its code
        raise CheckpointError(f"{path}: not a lipkit trainer state (it holds more than tensors and plain "
                              f"containers, and lipkit loads nothing else)") from None
    except Exception:  # a truncated, corrupt or foreign file
        raise CheckpointError(f"{path}: not a lipkit trainer state (not a complete torch file)") from None
    if not isinstance(state, dict) or state.get("format") != 1:
        raise CheckpointError(f"{path}: not a lipkit trainer state (format 1)")
    return state


def load_objective_state(objective: torch.nn.Module, path: Path) -> None:
    """An objective's parameters and buffers; a missing file is an objective without state."""
    own = objective.state_dict()
    if not path.is_file():
        if own:
            raise CheckpointError(f"{path}: missing; objective {type(objective).__name__} has state {_few(sorted(own))}")
        return
    state = read_tensors(path, "objective state")
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: objective state is for another objective: missing {_few(missing) or '-'}; "
            f"unexpected {_few(unexpected) or '-'}"
        )
    try:
        objective.load_state_dict(state)
    except RuntimeError as e:  # shapes differ
        raise CheckpointError(f"{path}: objective state does not fit ({str(e).splitlines()[-1].strip()})") from None
