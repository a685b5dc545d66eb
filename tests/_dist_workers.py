"""Helpers for tests/test_objectives_distributed.py: a tiny float64 LIPModel, a fixed global batch,
the objective configurations under test, and the worker that spawned gloo processes run.

Kept out of the test module so spawned processes import it without importing pytest's test file."""
from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from lipkit.config import (
    ModelConfig,
    ObjectiveConfig,
    PrototypeHeadConfig,
    SslHeadConfig,
    TextConfig,
    VisionConfig,
)
from lipkit.distributed import all_reduce_sum_nograd, world_size
from lipkit.models import LIPModel
from lipkit.objectives import HEAD_CLIP, build_objective

GLOBAL_BATCH = 8  # divisible by every world size tested (1, 2, 4)
STEPS = 2  # the second step sees state the first one left (nCLIP centers)

# name -> {config section: {field: value}}
CASES: dict[str, dict[str, dict]] = {
    "clip/mean": {},
    "clip/sum": {"clip": {"direction_reduction": "sum"}},
    "nclip/memax": {"nclip": {"lambda_sharp": 0.5}},
    "nclip/memax-live-target": {"nclip": {"stopgrad_target": False, "lambda_smooth": 0.7}},
    "nclip/sinkhorn": {"nclip": {"balance": "sinkhorn", "lambda_sharp": 0.5}},
    "nclip/sinkhorn-memax": {"nclip": {"balance": "sinkhorn_memax", "lambda_smooth": 0.7}},
    "nclip/sinkhorn-live-target": {"nclip": {"balance": "sinkhorn", "stopgrad_target": False, "sinkhorn_epsilon": 0.1}},
    "nclip/center": {"nclip": {"balance": "center", "center_momentum": 0.5}},
    "nclip/center-live-target": {"nclip": {"balance": "center", "stopgrad_target": False}},
    "nclip/none": {"nclip": {"balance": "none", "lambda_sharp": 0.5}},
    "xclip": {"xclip": {"w_clip": 0.3, "w_nclip": 0.7}, "nclip": {"lambda_sharp": 0.5}},
    "xclip/sinkhorn-sum": {"clip": {"direction_reduction": "sum"}, "nclip": {"balance": "sinkhorn"}},
}
for _form in ("sqdist", "neg_cos"):
    for _pairs in ("positive", "negative", "both"):
        CASES[f"clip_reg/{_form}-{_pairs}"] = {"clip_reg": {"form": _form, "pairs": _pairs, "lam": 0.5}}
CASES["clip_reg/unscaled-sum"] = {
    "clip_reg": {"pairs": "both", "scale_by_logit_scale": False, "lam": 2.0},
    "clip": {"direction_reduction": "sum"},
}
# Baselines (OBJECTIVES.md §5). SigLIP's t and b start where the loss is not saturated so their
# gradients are large; chunk_size 3 leaves a short last chunk at every world size.
CASES["siglip/chunked"] = {"siglip": {"init_scale": 4.0, "init_bias": -1.5, "chunk_size": 3}}
CASES["siglip/unchunked"] = {"siglip": {"chunk_size": 0}}
CASES["siglip/fixed"] = {"siglip": {"learnable": False, "init_scale": 2.0, "init_bias": 0.5}}
CASES["cyclip/mean"] = {"cyclip": {"lambda_inmodal": 0.7, "lambda_crossmodal": 1.3}}
CASES["cyclip/batch_sum"] = {"cyclip": {"reduction": "batch_sum"}, "clip": {"direction_reduction": "sum"}}
CASES["square"] = {"square": {"negative_weight": 0.5}}
# The strong recipe's label smoothing and multi-view CLIP, and SLIP ("views": image views per
# item; the CLIP term reads the first, or all with clip.views=all, SimCLR the last two).
CASES["clip/label-smoothing"] = {"clip": {"label_smoothing": 0.1}}
CASES["clip/all-views-smoothed"] = {"clip": {"views": "all", "label_smoothing": 0.2}, "views": {"n": 2}}
CASES["clip_reg/label-smoothing"] = {"clip": {"label_smoothing": 0.1}, "clip_reg": {"pairs": "positive"}}
CASES["xclip/label-smoothing"] = {"clip": {"label_smoothing": 0.1}, "nclip": {"lambda_sharp": 0.5}}
CASES["slip/two-views"] = {"slip": {"temperature": 0.2, "ssl_weight": 0.5}, "views": {"n": 2}}
CASES["slip/three-views-smoothed"] = {"clip": {"label_smoothing": 0.1}, "views": {"n": 3}}

# Deliberately wrong variants: the parity check must reject them, or it proves nothing.
BROKEN_CASES = {
    "broken/clip-gather-without-grad": ("clip/mean", "lipkit.objectives.clip.all_gather_with_grad"),
    "broken/nclip-local-mean-prediction": ("nclip/memax", "lipkit.objectives.nclip.all_reduce_mean"),
    "broken/siglip-gather-without-grad": ("siglip/chunked", "lipkit.objectives.siglip.all_gather_with_grad"),
    "broken/square-gather-without-grad": ("square", "lipkit.objectives.square.all_gather_with_grad"),
    # the prototype heads' BatchNorm with each rank's own statistics
    "broken/nclip-local-batchnorm": ("nclip/memax", "lipkit.models.batch_norm.all_reduce_mean"),
    "broken/slip-gather-without-grad": ("slip/two-views", "lipkit.objectives.slip.all_gather_with_grad"),
    "broken/slip-local-batchnorm": ("slip/two-views", "lipkit.models.batch_norm.all_reduce_mean"),
}


def objective_config(case: str) -> ObjectiveConfig:
    cfg = ObjectiveConfig(name=case.split("/")[0])
    for section, fields in CASES[case].items():
        if section == "views":
            continue
        for key, value in fields.items():
            setattr(getattr(cfg, section), key, value)
    return cfg


def tiny_model(heads) -> LIPModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vision=VisionConfig(image_size=8, patch_size=4, channels=1, width=16, layers=1, heads=2),
        text=TextConfig(vocab_size=50, context_length=8, width=16, layers=1, heads=2),
        embed_dim=8,
        prototypes=PrototypeHeadConfig(hidden_dim=32, bottleneck_dim=8, num_prototypes=16),
        ssl=SslHeadConfig(hidden_dim=24, out_dim=8),
        heads=sorted(heads),
    )
    return LIPModel(cfg).double()


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(GLOBAL_BATCH, 3, 1, 8, 8, generator=g, dtype=torch.float64)  # 3 views of each
    tokens = torch.randint(1, 50, (GLOBAL_BATCH, 8), generator=g)
    lengths = torch.randint(2, 9, (GLOBAL_BATCH,), generator=g)
    tokens[torch.arange(8)[None, :] >= lengths[:, None]] = 0  # right padding
    return images, tokens


def run_case(case: str, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Loss terms (mean over ranks), every parameter's gradient (DDP-averaged when distributed; the
    objective's own parameters, outside DDP, averaged here) and the objective's buffers, for STEPS
    forward/backward passes without an optimizer step."""
    views = CASES[case].get("views", {}).get("n", 1)
    images = images[:, :views] if views > 1 else images[:, 0]
    objective = build_objective(objective_config(case)).train().double()
    model = tiny_model(objective.required_heads)
    if world_size() > 1:
        # A prototypes-only model still owns the (then unused) logit scale; so does a model
        # trained by an objective that ignores it (SigLIP, square loss).
        model_uses_all = HEAD_CLIP in objective.required_heads and objective.uses_logit_scale
        net = DistributedDataParallel(model, find_unused_parameters=not model_uses_all)
    else:
        net = model
    out = {}
    for step in range(STEPS):
        model.zero_grad(set_to_none=True)
        terms = objective(net(images, tokens, heads=objective.required_heads))
        terms["loss"].backward()
        for key, value in terms.items():
            out[f"step{step}/{key}"] = all_reduce_sum_nograd(value.detach().double()) / world_size()
        for name, p in model.named_parameters():
            out[f"step{step}/grad/{name}"] = torch.zeros_like(p) if p.grad is None else p.grad.clone()
        for name, p in objective.named_parameters():
            grad = torch.zeros_like(p) if p.grad is None else p.grad
            out[f"step{step}/grad/objective.{name}"] = all_reduce_sum_nograd(grad.clone()) / world_size()
            p.grad = None
    for name, b in objective.named_buffers():
        out[f"buffer/{name}"] = b.clone()
    return out


@contextmanager
def _replaced(target: str, value):
    module_name, attr = target.rsplit(".", 1)
    module = __import__(module_name, fromlist=[attr])
    original = getattr(module, attr)
    setattr(module, attr, value)
    try:
        yield
    finally:
        setattr(module, attr, original)


def _gather_without_grad(x: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def run_broken_case(name: str, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    case, target = BROKEN_CASES[name]
    replacement = _gather_without_grad if target.endswith("all_gather_with_grad") else (lambda x: x)
    with _replaced(target, replacement):
        return run_case(case, images, tokens)


def worker(rank: int, size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=size, timeout=timedelta(seconds=120)
    )
    try:
        images, tokens = global_batch()
        local = slice(rank * GLOBAL_BATCH // size, (rank + 1) * GLOBAL_BATCH // size)
        results = {case: run_case(case, images[local], tokens[local]) for case in CASES}
        results.update({name: run_broken_case(name, images[local], tokens[local]) for name in BROKEN_CASES})
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def train_worker(rank: int, size: int, port: int, out_dir: str, runs: dict) -> None:
    """tests/test_lora.py: train each of `runs` ({name: RunConfig}) as rank `rank` of `size` gloo
    processes (torchrun's environment), into OUT/name-rank{rank}: only rank 0's may be written."""
    import os
    from pathlib import Path

    from lipkit.train import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        for name, cfg in runs.items():
            train(cfg, Path(out_dir) / f"{name}-rank{rank}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
