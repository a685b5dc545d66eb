"""AdamW with no weight decay on norms, biases and the logit scale; linear warm-up + cosine."""
from __future__ import annotations

import math

import torch
from torch import nn

from lipkit.config import TrainConfig


def param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict]:
    # Every 0-d and 1-d parameter is a norm gain, a bias or the logit scale. Under FSDP2 the
    # sharded tower parameters (DTensors) and the replicated heads go to separate groups: AdamW's
    # multi-tensor kernels cannot mix the two.
    decay, no_decay = [], []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": [p for p in params if type(p) is nn.Parameter], "weight_decay": wd}
              for params, wd in ((decay, weight_decay), (no_decay, 0.0))]
    if any(type(p) is not nn.Parameter for p in decay + no_decay):
        groups += [{"params": [p for p in params if type(p) is not nn.Parameter], "weight_decay": wd}
                   for params, wd in ((decay, weight_decay), (no_decay, 0.0))]
    return groups


def _fusable(groups: list[dict]) -> bool:
    """Plain float tensors on CPU or CUDA: AdamW's fused kernel applies (not to FSDP's DTensors)."""
    return all(type(p) is nn.Parameter and p.device.type in ("cpu", "cuda") and p.is_floating_point()
               for g in groups for p in g["params"])


def build_optimizer(modules: list[nn.Module], cfg: TrainConfig) -> torch.optim.AdamW:
    # The fused kernel updates each tensor in one pass; foreach on CPU runs one op per tensor per
    # AdamW term, which costs a few percent of a small model's step (lipkit bench tiny).
    groups = param_groups(modules, cfg.weight_decay)
    fused = _fusable(groups)
    return torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        fused=fused,
        foreach=None if fused else True,
    )


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based)."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    decay_steps = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
