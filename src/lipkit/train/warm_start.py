"""`lipkit train --init DIR`: a new run that starts from another run's (or an imported model's)
weights and tokenizer, with a fresh optimizer, schedule and step count.

The towers must match exactly; heads may differ, since the new objective decides them: heads the
new model has and DIR lacks (nCLIP prototype heads on an imported CLIP) keep their fresh
initialisation, and heads DIR has that the new model lacks are left out. Both are reported."""
from __future__ import annotations

from pathlib import Path

import torch

from lipkit.models.lora import is_lora_key
from lipkit.runs.directory import MODEL_FILE, CheckpointError, read_tensors

HEAD_PREFIXES = ("image_projection.", "text_projection.", "log_logit_scale", "image_prototypes.",
                 "text_prototypes.", "image_adapter.", "text_adapter.")


def _part(key: str) -> str:
    if is_lora_key(key):
        return "LoRA adapters"
    return next((p.rstrip(".") for p in HEAD_PREFIXES if key.startswith(p)), key)


def warm_start(model: torch.nn.Module, init_dir: Path) -> list[str]:
    """Copy DIR's weights into `model`; returns notes on the heads started fresh or left out."""
    path = Path(init_dir) / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"--init {init_dir}: no {MODEL_FILE} there")
    saved = read_tensors(path)
    own = model.state_dict()
    unplaced = [k for k in saved if is_lora_key(k) and k not in own]
    if unplaced:  # left out, they would silently change the model
        raise CheckpointError(f"--init {init_dir}: its LoRA adapters ({unplaced[0]}, ...) have no place in this "
                              f"config's model; fold them in first (lipkit merge {init_dir} OUT) and start from OUT")
    missing = [k for k in own if k not in saved]  # new adapters start as the base model (B = 0)
    towers_missing = [k for k in missing if not k.startswith(HEAD_PREFIXES) and not is_lora_key(k)]
    shape = [k for k in own if k in saved and own[k].shape != saved[k].shape]
    if towers_missing or shape:
        detail = (f"missing {', '.join(towers_missing[:4])}" if towers_missing else
                  "shape differs for " + ", ".join(f"{k} {list(saved[k].shape)} vs {list(own[k].shape)}" for k in shape[:4]))
        raise CheckpointError(f"--init {init_dir}: its model does not fit this config ({detail}); "
                              "start from its own config (omit --config) and change only heads and training")
    model.load_state_dict({k: saved[k] for k in own if k in saved}, strict=False)
    notes = []
    fresh = sorted({_part(k) for k in missing})
    if fresh:
        notes.append(f"initialised fresh (not in {init_dir}): {', '.join(fresh)}")
    dropped = sorted({_part(k) for k in saved if k not in own})
    if dropped:
        notes.append(f"left out of {init_dir} (this objective does not use them): {', '.join(dropped)}")
    return notes
