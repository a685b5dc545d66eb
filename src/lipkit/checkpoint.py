"""Run directories: config.yaml + model.safetensors + tokenizer.json, written atomically."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lipkit.config import ConfigError, RunConfig, load_config, save_config
from lipkit.errors import LipkitError

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"


class CheckpointError(LipkitError, RuntimeError):
    """A run directory that cannot be loaded, stated in one line."""


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)` then rename onto `path`: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_run_config(cfg: RunConfig, run_dir: Path) -> None:
    atomic_write(run_dir / CONFIG_FILE, lambda p: save_config(cfg, p))


def save_model(model: torch.nn.Module, run_dir: Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(run_dir / MODEL_FILE, lambda p: save_file(state, str(p)))


def load_run_config(run_dir: Path) -> RunConfig:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: not a lipkit run directory (no {CONFIG_FILE})")
    try:
        return load_config(str(path))
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None


def load_state_into(model: torch.nn.Module, path: Path) -> None:
    """Load weights, refusing a checkpoint of another architecture with the keys that differ."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing model weights")
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"{path}: cannot read weights ({e})") from None
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
    model.load_state_dict(state)


def _few(items: list[str], n: int = 5) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def load_model(run_dir: Path):
    from lipkit.models import LIPModel

    cfg = load_run_config(run_dir)
    model = LIPModel(cfg.model)
    load_state_into(model, run_dir / MODEL_FILE)
    model.eval()
    return model


def load_run(run_dir: str | Path):
    """(model, tokenizer, config) of a finished or in-progress run directory."""
    from lipkit.tokenizer import Tokenizer

    run_dir = Path(run_dir)
    model = load_model(run_dir)
    tok_path = run_dir / TOKENIZER_FILE
    if not tok_path.is_file():
        raise CheckpointError(f"{run_dir}: missing {TOKENIZER_FILE}")
    return model, Tokenizer.load(tok_path), load_run_config(run_dir)
