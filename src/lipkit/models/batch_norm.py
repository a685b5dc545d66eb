"""BatchNorm over the global batch: statistics reduced over every process, with gradient.

In one process it is `nn.BatchNorm1d` (same outputs, gradients and running statistics). Under
torchrun the mean and variance are those of the concatenated batch of all ranks, through
`lipkit.distributed.all_reduce_mean`, so the loss and every gradient equal one process's on the
global batch, the same guarantee every objective's batch statistics give. (Under feature-cache
accumulation the trainer runs the heads once on the whole batch: lipkit.train.accumulation.)
"""
from __future__ import annotations

import torch
from torch import nn

from lipkit.distributed import all_reduce_mean, world_size


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """`nn.BatchNorm1d` on [N, C] whose training statistics are those of the global batch
    (every rank must pass the same local N). Evaluation uses the running statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2:
            raise ValueError(f"GlobalBatchNorm1d expects [N, C], got {tuple(x.shape)}")
        if not self.training:
            return super().forward(x)
        n = x.shape[0] * world_size()
        if n < 2:
            raise ValueError("GlobalBatchNorm1d needs at least 2 samples in the global batch to train")
        # statistics in at least fp32 under autocast (as nn.BatchNorm1d's kernels keep them): in
        # bf16 the rounded mean would leave part of the shared component the norm is there to remove
        xs = x.to(torch.promote_types(x.dtype, torch.float32))
        mean = all_reduce_mean(xs.mean(0))
        var = all_reduce_mean((xs - mean).pow(2).mean(0))  # biased, as BatchNorm normalises with
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                # momentum None: a cumulative average, as in nn.BatchNorm1d
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_((var.detach() * (n / (n - 1))).to(self.running_var.dtype), alpha=m)
        y = (xs - mean) * torch.rsqrt(var + self.eps)
        y = y * self.weight + self.bias if self.affine else y
        return y.to(x.dtype)
