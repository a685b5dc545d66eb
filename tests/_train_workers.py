"""Helpers for tests/test_ddp_train.py: the run configurations and the worker that spawned gloo
processes run (kept out of the test module so spawned processes do not import pytest's file)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from lipkit.config import load_config

STEPS = 10
# tiny towers, real data (Fashion-MNIST), no dropout: dropout masks are drawn per process, so a
# run with dropout is exactly reproducible but not equal across process counts
BASE = [
    f"train.steps={STEPS}", "train.batch_size=32", "train.warmup_steps=2", "train.log_every_steps=1",
    "train.progress=false", "train.save_every_steps=5", "train.lr=2.0e-3", "train.precision=fp64", "data.train_limit=256",
    "model.vision.width=32", "model.vision.layers=2", "model.vision.heads=2",
    "model.text.width=32", "model.text.layers=2", "model.text.heads=2", "model.embed_dim=16",
    "model.prototypes.num_prototypes=16", "model.prototypes.hidden_dim=32", "model.prototypes.bottleneck_dim=8",
]
CASES = {
    "clip-ddp": ["objective.name=clip", "train.strategy=ddp"],
    # SigLIP's scale and bias live in the objective, outside DDP; the model's logit scale is unused
    "siglip-ddp-accum2": ["objective.name=siglip", "train.strategy=ddp", "train.accum_steps=2"],
    "xclip-fsdp-accum2": ["objective.name=xclip", "objective.nclip.balance=center", "train.strategy=fsdp",
                          "train.accum_steps=2", "train.grad_clip_norm=0.5"],
    # the prototype heads' BatchNorm over the global batch, under DDP and accumulation
    "nclip-ddp-accum2": ["objective.name=nclip", "train.strategy=ddp", "train.accum_steps=2"],
    # prototype heads that CLIP does not read: no gradient on any rank, so AdamW (and its weight
    # decay) leaves them alone, as in one process
    "clip-ddp-unread-heads": ["objective.name=clip", "train.strategy=ddp", "model.heads=[clip,prototypes]"],
    # both towers locked: nothing for DDP to wrap, the heads and adapters are replicated
    "xclip-locked-accum2": ["objective.name=xclip", "model.lock_image=true", "model.lock_text=true",
                            "model.adapter_layers=1", "data.cache_features=false", "train.accum_steps=2"],
}
RESUMED = ("siglip-ddp-accum2", "xclip-fsdp-accum2")  # continued from step 5 on 2 processes too


def case_config(case: str):
    return load_config("fashion-tiny", BASE + CASES[case])


def worker(rank: int, size: int, port: int, out_dir: str) -> None:
    from lipkit.train import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    out = Path(out_dir)
    try:
        for case in CASES:
            # every rank names its own directory: only rank 0's may be written
            train(case_config(case), out / f"{case}-rank{rank}")
        for case in RESUMED:
            start = out / f"{case}-rank0" / "checkpoints" / "step-00000005"
            train(case_config(case), out / f"{case}-resumed-rank{rank}", resume=start)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def bad_data_worker(rank: int, size: int, port: int, out_dir: str, data_dir: str, max_bad_fraction: float) -> None:
    """Train on `data_dir` (pairs, some unreadable) and write what happened to rank{rank}.json."""
    import json

    from lipkit.data import TooManyBadSamplesError
    from lipkit.train import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    out = Path(out_dir)
    cfg = load_config("fashion-tiny", [
        f"data.source={data_dir}", "model.vision.channels=3", "data.image_mean=[0.5,0.5,0.5]",
        "data.image_std=[0.5,0.5,0.5]", f"data.max_bad_fraction={max_bad_fraction}", "train.steps=12",
        "train.batch_size=4", "train.warmup_steps=1", "train.progress=false", "model.vision.width=32",
        "model.vision.layers=1", "model.vision.heads=2", "model.text.width=32", "model.text.layers=1",
        "model.text.heads=2", "model.embed_dim=16", "objective.name=clip"])
    try:
        result = {"steps": train(cfg, out / "run").steps}
    except TooManyBadSamplesError as e:
        result = {"error": str(e)}
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    (out / f"rank{rank}.json").write_text(json.dumps(result))
