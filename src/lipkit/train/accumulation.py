"""Forward and backward of one optimizer step, plain or by feature cache (GradCache).

With k micro-batches the objective must see all k*B pairs at once (the contrastive batch, nCLIP's
batch statistics), and so must the prototype heads' BatchNorm. Feature cache does that in the
memory of one micro-batch of the towers:

1. run the towers on every micro-batch without gradient and cache their pooled features (the RNG
   state before each forward is kept, so dropout can be replayed);
2. concatenate the cached features into leaves that require grad, run the heads
   (`heads_from_features`: adapters, projections, logit scale, prototype heads) and the objective
   once on the whole batch; its backward gives d loss / d feature for every pair, and lands
   directly in the heads' and the objective's own parameters;
3. run the towers on each micro-batch again with gradient, replaying its RNG state, and
   backpropagate the cached feature gradients of its rows (skipped when no tower parameter is
   trained).

The heads' parameters are never synchronised by the DDP/FSDP wrapper (lipkit.train.parallel):
the loop averages their gradients, as it does the objective's. The towers' gradients are
synchronised only on the last recompute.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from lipkit.distributed import all_finite
from lipkit.train.precision import Precision
from lipkit.train.rng import capture_forward_rng, restore_forward_rng

FEATURES = ("image_features", "text_features")


class TowerFeatures(NamedTuple):
    """A micro-batch of the frozen towers' pooled features (lipkit.data.feature_cache), which the
    model takes in place of images and tokens."""

    image_features: torch.Tensor
    text_features: torch.Tensor


MicroBatch = tuple[torch.Tensor, torch.Tensor] | TowerFeatures  # (images, tokens) on the device, or features


def model_inputs(micro: MicroBatch) -> dict[str, torch.Tensor]:
    """The model's keyword arguments for one micro-batch."""
    if isinstance(micro, TowerFeatures):
        return micro._asdict()
    images, tokens = micro
    return {"images": images, "tokens": tokens}


def forward_backward(
    model: nn.Module,
    objective: nn.Module,
    micro_batches: Sequence[MicroBatch],
    heads: Iterable[str],
    precision: Precision,
    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    lip_model: nn.Module | None = None,
) -> tuple[dict[str, torch.Tensor], bool]:
    """Run the objective over all micro-batches as one batch and accumulate gradients. `model`
    is what the loop calls (a DDP wrapper, or the model); `lip_model` the LIPModel inside it
    (default: `model`), whose heads step 2 runs directly.

    Returns (terms, finite). When the loss is not finite on any rank nothing is backpropagated
    (every rank decides the same, so distributed backward never hangs)."""
    heads = frozenset(heads)
    if len(micro_batches) == 1:
        with precision.autocast():
            outputs = model(**model_inputs(micro_batches[0]), heads=heads)
        terms = objective(outputs)
        finite = all_finite(terms["loss"])
        if finite:
            precision.scale(terms["loss"]).backward()
        return terms, finite
    return _feature_cache(model, lip_model if lip_model is not None else model, objective, micro_batches, heads,
                          precision, no_sync)


def _feature_cache(model, lip_model, objective, micro_batches, heads, precision, no_sync):
    device = micro_batches[0][0].device
    size = micro_batches[0][0].shape[0]
    if any(micro[0].shape[0] != size for micro in micro_batches):
        raise ValueError("feature-cache accumulation needs micro-batches of equal size")

    # 1. no-grad tower pass, remembering the RNG state each forward started from
    rng_states, cached = [], []
    with torch.no_grad():
        for micro in micro_batches:
            rng_states.append(capture_forward_rng(device))
            with precision.autocast():
                cached.append(model(**model_inputs(micro), towers_only=True))

    # 2. the heads and the objective on the whole batch
    leaves = {key: torch.cat([c[key] for c in cached]).detach().requires_grad_(True) for key in FEATURES}
    with precision.autocast():
        outputs = lip_model.heads_from_features(leaves["image_features"], leaves["text_features"], heads)
    terms = objective(outputs)
    finite = all_finite(terms["loss"])
    if not finite:
        return terms, False
    precision.scale(terms["loss"]).backward()
    if not lip_model.towers_trainable:
        return terms, True
    rng_after = capture_forward_rng(device)  # the replay below rewinds the stream; it continues from here

    # 3. recompute each micro-batch's towers with gradient and push the cached feature gradients through
    last = len(micro_batches) - 1
    for i, micro in enumerate(micro_batches):
        restore_forward_rng(rng_states[i], device)
        with no_sync() if i < last else contextlib.nullcontext():
            with precision.autocast():
                features = model(**model_inputs(micro), towers_only=True)
            keys = [key for key in FEATURES if features[key].requires_grad and leaves[key].grad is not None]
            if keys:
                torch.autograd.backward([features[key] for key in keys],
                                        [leaves[key].grad[i * size:(i + 1) * size].to(features[key].dtype)
                                         for key in keys])
    restore_forward_rng(rng_after, device)
    return terms, True
