"""The linear probe as CLIP_benchmark 1.6.2 trains it (`eval.linear_solver: adamw`), for numbers
that sit beside its `linear_probe` ones.

Step for step its `linear_probe.evaluate` without a validation split: the features L2-normalised;
the training rows in the order of `torch.randperm` under the seed (the first `few_shot_k` of each
class in that order, when set); a `torch.nn.Linear` initialised after seeding again; AdamW (lr,
weight decay) with a cosine schedule from the first step and no warm-up; batches drawn by a
shuffling DataLoader; cross-entropy; `epochs` passes. Given the same rows, the same seed and the
same random-number state it is CLIP_benchmark's probe to the bit
(tests/test_clip_benchmark_agreement.py); its command line seeds the generator and then loads the
model, which draws from it before the permutation, so a lipkit and a CLIP_benchmark run differ
there as two seeds do. The global generator is used, as CLIP_benchmark uses it, and put back
afterwards.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from .metrics import classification_metrics


def _rows(perm: list[int], labels: torch.Tensor, few_shot_k: int) -> list[int]:
    """The training rows in `perm` order: all, or the first `few_shot_k` of each class."""
    if not few_shot_k:
        return perm
    counts: dict[int, int] = {}
    rows = []
    for p in perm:
        c = int(labels[p])
        if counts.get(c, 0) < few_shot_k:
            counts[c] = counts.get(c, 0) + 1
            rows.append(p)
    return rows


@dataclass
class AdamWProbe:
    """A fitted probe: one linear layer on L2-normalised features, and how it was trained."""
    linear: torch.nn.Linear
    num_classes: int
    settings: dict  # solver, lr, epochs, batch_size, weight_decay: for the record

    def scores(self, features) -> torch.Tensor:
        """Logits [N, num_classes]."""
        x = F.normalize(torch.as_tensor(features).float(), dim=-1)
        with torch.no_grad():
            return self.linear(x)

    def evaluate(self, features, labels, topk: Sequence[int] = (1, 5)) -> dict[str, float]:
        """{"acc{k}", "mean_per_class_recall"} of the probe on (features, labels)."""
        scores = self.scores(features)
        labels = torch.as_tensor(np.asarray(labels)).long()
        if len(labels) and int(labels.max()) >= scores.shape[1]:  # a class the probe never saw
            pad = torch.full((len(scores), int(labels.max()) + 1 - scores.shape[1]), -math.inf)
            scores = torch.cat([scores, pad], dim=1)
        return classification_metrics(scores, labels, topk)


def fit(train_features, train_labels, *, lr: float = 0.1, epochs: int = 10, batch_size: int = 64,
        weight_decay: float = 0.0, seed: int = 0, few_shot_k: int = 0) -> AdamWProbe:
    """CLIP_benchmark's `linear_probe` training (see the module docstring)."""
    if lr <= 0 or epochs < 1 or batch_size < 1 or weight_decay < 0:
        raise ValueError(f"eval.adamw: lr > 0, epochs >= 1, batch_size >= 1 and weight_decay >= 0, got lr {lr}, "
                         f"epochs {epochs}, batch_size {batch_size}, weight_decay {weight_decay}")
    x = F.normalize(torch.as_tensor(train_features).float(), dim=-1)
    y = torch.as_tensor(np.asarray(train_labels)).long()
    num_classes = int(y.max()) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rows = _rows([p.item() for p in torch.randperm(len(x))], y, few_shot_k)
        torch.manual_seed(seed)
        linear = torch.nn.Linear(x.shape[1], num_classes)
        optimizer = torch.optim.AdamW(linear.parameters(), lr=lr, weight_decay=weight_decay)
        loader = DataLoader(TensorDataset(x[rows], y[rows]), batch_size=batch_size, shuffle=True)
        steps = epochs * len(loader)
        for epoch in range(epochs):
            for i, (xb, yb) in enumerate(loader):
                step = i + epoch * len(loader)
                for group in optimizer.param_groups:
                    group["lr"] = 0.5 * (1 + np.cos(np.pi * step / steps)) * lr
                optimizer.zero_grad()
                F.cross_entropy(linear(xb), yb).backward()
                optimizer.step()
    linear.eval()
    return AdamWProbe(linear, num_classes, {"solver": "adamw", "lr": lr, "epochs": epochs,
                                            "batch_size": batch_size, "weight_decay": weight_decay})
