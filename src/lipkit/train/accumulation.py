"""Forward and backward of one optimizer step, plain or by feature cache (GradCache).

With k micro-batches the objective must see all k*B pairs at once (the contrastive batch, nCLIP's
batch statistics). Feature cache does that in the memory of one micro-batch:

1. forward every micro-batch without gradient and cache its outputs (the RNG state before each
   forward is kept, so dropout can be replayed);
2. concatenate the cached per-sample outputs into leaves that require grad and call the
   objective once on the whole batch; its backward gives d loss / d output for every pair, and
   lands directly in the objective's own parameters;
3. forward each micro-batch again with gradient, replaying its RNG state, and backpropagate the
   cached output gradients of its rows.

An output is *per-sample* when its first dimension is the micro-batch size; anything else (the
logit scale) is shared by all micro-batches: it enters the objective once and its gradient is
applied once, through the last micro-batch's recompute. Gradient synchronisation (DDP, FSDP)
happens only on that last recompute.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from lipkit.distributed import all_finite
from lipkit.train.precision import Precision
from lipkit.train.rng import capture_forward_rng, restore_forward_rng

MicroBatch = tuple[torch.Tensor, torch.Tensor]  # (images, tokens) on the device


def _is_per_sample(value, batch: int) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == batch


def _as_leaf(value: torch.Tensor) -> torch.Tensor:
    leaf = value.detach()
    return leaf.requires_grad_(True) if leaf.is_floating_point() else leaf


def forward_backward(
    model: nn.Module,
    objective: nn.Module,
    micro_batches: Sequence[MicroBatch],
    heads: Iterable[str],
    precision: Precision,
    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> tuple[dict[str, torch.Tensor], bool]:
    """Run the objective over all micro-batches as one batch and accumulate gradients.

    Returns (terms, finite). When the loss is not finite on any rank nothing is backpropagated
    (every rank decides the same, so distributed backward never hangs)."""
    heads = frozenset(heads)
    if len(micro_batches) == 1:
        images, tokens = micro_batches[0]
        with precision.autocast():
            outputs = model(images, tokens, heads=heads)
        terms = objective(outputs)
        finite = all_finite(terms["loss"])
        if finite:
            precision.scale(terms["loss"]).backward()
        return terms, finite
    return _feature_cache(model, objective, micro_batches, heads, precision, no_sync)


def _feature_cache(model, objective, micro_batches, heads, precision, no_sync):
    device = micro_batches[0][0].device
    size = micro_batches[0][0].shape[0]
    if any(images.shape[0] != size for images, _ in micro_batches):
        raise ValueError("feature-cache accumulation needs micro-batches of equal size")

    # 1. no-grad pass, remembering the RNG state each forward started from
    rng_states, cached = [], []
    with torch.no_grad():
        for images, tokens in micro_batches:
            rng_states.append(capture_forward_rng(device))
            with precision.autocast():
                cached.append(model(images, tokens, heads=heads))

    # 2. the objective on the whole batch
    per_sample = {key: _is_per_sample(value, size) for key, value in cached[0].items()}
    leaves = {
        key: _as_leaf(torch.cat([c[key] for c in cached]) if per_sample[key] else value)
        for key, value in cached[0].items()
        if isinstance(value, torch.Tensor)
    }
    terms = objective(dict(leaves))
    finite = all_finite(terms["loss"])
    if not finite:
        return terms, False
    precision.scale(terms["loss"]).backward()
    rng_after = capture_forward_rng(device)  # the replay below rewinds the stream; it continues from here

    # 3. recompute each micro-batch with gradient and push the cached output gradients through it
    last = len(micro_batches) - 1
    for i, (images, tokens) in enumerate(micro_batches):
        restore_forward_rng(rng_states[i], device)
        with no_sync() if i < last else contextlib.nullcontext():
            with precision.autocast():
                outputs = model(images, tokens, heads=heads)
            tensors, grads = [], []
            for key, leaf in leaves.items():
                out = outputs.get(key)
                if leaf.grad is None or out is None or not out.requires_grad:
                    continue
                if per_sample[key]:
                    grad = leaf.grad[i * size : (i + 1) * size]
                elif i == last:
                    grad = leaf.grad
                else:
                    continue
                tensors.append(out)
                grads.append(grad.to(out.dtype))
            if tensors:
                torch.autograd.backward(tensors, grads)
    restore_forward_rng(rng_after, device)
    return terms, True
