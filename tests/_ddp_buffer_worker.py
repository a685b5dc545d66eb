"""Worker for tests/test_ddp_buffers.py (kept out of the test module so spawned processes do not
import pytest's file): DDP over a LIPModel on 2 gloo processes, each rank with its own data."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from lipkit.config import ModelConfig, PrototypeHeadConfig, TextConfig, VisionConfig
from lipkit.distributed import init_from_env
from lipkit.models import LIPModel
from lipkit.train.parallel import wrap_model

TEXT = TextConfig(vocab_size=300, context_length=12, width=16, layers=1, heads=2)
PROTOTYPES = PrototypeHeadConfig(num_prototypes=8, hidden_dim=16, bottleneck_dim=8)
MODELS = {
    "vit": ModelConfig(vision=VisionConfig(image_size=16, patch_size=8, width=16, layers=1, heads=2, channels=3),
                       text=TEXT, embed_dim=8, heads=["clip", "prototypes"], prototypes=PROTOTYPES),
    "efficientnet": ModelConfig(vision=VisionConfig(name="efficientnet_lite0", image_size=32, channels=3),
                                text=TEXT, embed_dim=8, heads=["clip", "prototypes"], prototypes=PROTOTYPES),
}


def worker(rank: int, size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size))
    torch.set_num_threads(1)
    init_from_env("gloo")  # with lipkit's pause at exit for gloo's last collective (lipkit.distributed)
    report = {}
    try:
        for name, cfg in MODELS.items():
            torch.manual_seed(0)  # the same initial weights on every rank, as the trainer makes them
            model = LIPModel(cfg).train()
            parallel = wrap_model(model, "ddp", torch.device("cpu"))
            ddp = parallel.train_model
            generator = torch.Generator().manual_seed(100 + rank)  # each rank its own batches
            size_px = cfg.vision.image_size
            for _ in range(3):
                images = torch.randn(4, 3, size_px, size_px, generator=generator)
                tokens = torch.randint(3, 300, (4, 12), generator=generator)
                out = ddp(images, tokens)
                loss = out["image_embeds"].sum() + out["text_embeds"].sum()
                (loss + (out["image_protos"] * out["text_protos"]).sum()).backward()
            buffers = dict(model.named_buffers())
            heads = dict(model.head_buffers())
            equal_across_ranks = {}
            for key, value in buffers.items():
                gathered = [torch.empty_like(value) for _ in range(size)]
                dist.all_gather(gathered, value.contiguous())
                equal_across_ranks[key] = all(torch.equal(g, gathered[0]) for g in gathered)
            broadcast = {id(b) for b in ddp.modules_buffers}
            report[name] = {
                "head_buffers": sorted(heads),
                "heads_equal": all(equal_across_ranks[k] for k in heads),
                "heads_broadcast": any(id(b) in broadcast for b in heads.values()),
                "tower_buffers_broadcast": len(broadcast),
                "tower_buffers": sum(1 for k in buffers if k not in heads),
                "towers_equal": all(v for k, v in equal_across_ranks.items() if k not in heads),
            }
        if rank == 0:
            Path(out_dir, "report.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()
