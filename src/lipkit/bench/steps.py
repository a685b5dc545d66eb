"""One training step (forward, loss, backward, AdamW) for lipkit and for open_clip, on fixed
synthetic inputs, so a harness can time them side by side."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from lipkit.bench.archs import BenchArch
from lipkit.config import ObjectiveConfig, TrainConfig

OPTIM = TrainConfig(lr=1e-4, weight_decay=0.1, beta1=0.9, beta2=0.98, eps=1e-6)


# Caption lengths in tokens, SOS and EOT included: CC3M captions average about 10 words, 10-20
# BPE tokens. `None` fills the whole context (no padding anywhere).
SHORT_CAPTIONS = (10, 20)


def synthetic_batch(
    arch: BenchArch, batch_size: int, caption_tokens: tuple[int, int] | None = SHORT_CAPTIONS, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and token rows right-padded with 0, the end-of-text token (the highest id, where
    open_clip's argmax pooling looks for it) last."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, arch.image_size, arch.image_size, generator=g)
    tokens = torch.randint(1, arch.vocab_size - 1, (batch_size, arch.context_length), generator=g)
    if caption_tokens is None:
        lengths = torch.full((batch_size,), arch.context_length)
    else:
        lo, hi = caption_tokens
        lengths = torch.randint(lo, min(hi, arch.context_length) + 1, (batch_size,), generator=g)
    positions = torch.arange(arch.context_length)
    tokens[positions >= lengths[:, None]] = 0
    tokens[torch.arange(batch_size), lengths - 1] = arch.vocab_size - 1
    return images, tokens


@dataclass
class Stepper:
    name: str
    model: torch.nn.Module
    step: Callable[[], float]


def lipkit_stepper(
    arch: BenchArch, objective: str = "clip", batch_size: int | None = None,
    caption_tokens: tuple[int, int] | None = SHORT_CAPTIONS,
) -> Stepper:
    from lipkit.models import LIPModel
    from lipkit.objectives import build_objective
    from lipkit.train.optim import build_optimizer

    obj = build_objective(ObjectiveConfig(name=objective))
    model = LIPModel(arch.lipkit_config(tuple(sorted(obj.required_heads))))
    optimizer = build_optimizer([model, obj], OPTIM)
    images, tokens = synthetic_batch(arch, batch_size or arch.batch_size, caption_tokens)

    def step() -> float:
        loss = obj(model(images, tokens, heads=obj.required_heads))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.clamp_logit_scale()
        return loss.item()

    return Stepper(f"lipkit-{objective}", model, step)


def open_clip_stepper(
    arch: BenchArch, batch_size: int | None = None, caption_tokens: tuple[int, int] | None = SHORT_CAPTIONS
) -> Stepper:
    from lipkit.interop.gateway import import_open_clip

    open_clip = import_open_clip()
    model = open_clip.model.CLIP(**arch.open_clip_config())
    loss_fn = open_clip.ClipLoss()
    # The same AdamW groups as open_clip's own trainer: no decay on gains, biases, logit scale.
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "logit_scale" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": OPTIM.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=OPTIM.lr, betas=(OPTIM.beta1, OPTIM.beta2), eps=OPTIM.eps, foreach=True,
    )
    images, tokens = synthetic_batch(arch, batch_size or arch.batch_size, caption_tokens)

    def step() -> float:
        image_features, text_features, logit_scale = model(images, tokens)
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        return loss.item()

    return Stepper("open_clip", model, step)
