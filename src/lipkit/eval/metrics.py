"""Classification metrics shared by the zero-shot, linear-probe, kNN and OOD tasks."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def to_tensor(x) -> torch.Tensor:
    """A tensor of `x`; NumPy arrays are copied (read-only ones cannot be shared with torch)."""
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.array(x))


def as_labels(labels, n: int, num_classes: int) -> torch.Tensor:
    """`labels` as a LongTensor [n] of class indices in [0, num_classes), or a ValueError."""
    labels = to_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape [{n}], got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.long()
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return labels


def stable_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores per row; equal scores rank the lower index first (a stable
    sort), so results never depend on the backend's topk."""
    k = min(k, scores.shape[1])
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]


def classification_metrics(scores: torch.Tensor, labels, topk: Sequence[int] = (1, 5)
                           ) -> dict[str, float]:
    """`acc{k}` for each k in `topk` and `mean_per_class_recall` from scores [N, C].

    acc{k} counts a hit when the label is among the min(k, C) highest scores, so acc5 with
    fewer than 5 classes is well defined. Ties are broken toward the lower class index
    (a stable sort), so results never depend on the backend's topk. Mean per-class recall
    averages top-1 recall over the classes that have at least one sample; classes without
    samples are left out rather than counted as 0 (as sklearn's balanced_accuracy_score).
    """
    scores = torch.as_tensor(scores)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"scores must have shape [N, C] with N, C > 0, got {tuple(scores.shape)}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN (did the model produce NaN embeddings?)")
    if not topk or any(int(k) < 1 for k in topk):
        raise ValueError(f"topk must be positive integers, got {tuple(topk)}")
    n, num_classes = scores.shape
    labels = as_labels(labels, n, num_classes).to(scores.device)

    ranked = stable_topk(scores, max(topk))
    hits = ranked == labels[:, None]
    metrics = {f"acc{k}": hits[:, :min(k, num_classes)].any(dim=1).double().mean().item()
               for k in topk}

    correct = hits[:, 0]
    support = torch.bincount(labels, minlength=num_classes)
    recalled = torch.bincount(labels[correct], minlength=num_classes)
    present = support > 0
    metrics["mean_per_class_recall"] = (recalled[present].double() / support[present]).mean().item()
    return metrics


def cosine_scores(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """Cosine similarities [Q, G] of two L2-normalised float64 matrices, rounded to float32.

    The products run in float64 and are then rounded, so equal embeddings score exactly equal
    and a chunked computation (other block shapes, other BLAS kernels, other summation orders)
    agrees with an unchunked one: float64 rounding differences are ~1e-16, far below a float32
    step. Ties then break by index, deterministically."""
    return (queries @ gallery.T).float()


def unit_rows(x, name: str) -> torch.Tensor:
    """`x` [N, D] as float64 rows of unit length; a ValueError naming `x` for a bad shape or NaN."""
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have shape [N, D] with N, D > 0, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or inf")
    return torch.nn.functional.normalize(x.double(), dim=-1)
