"""What the objective tests share: random model outputs, objectives built from config sections,
and InfoNCE written out one row at a time (never with the library's helpers)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from lipkit.config import ObjectiveConfig
from lipkit.objectives import build_objective

D = 5  # embedding width


def random_outputs(b: int, seed: int = 0, requires_grad: bool = False, k: int = 0) -> dict[str, torch.Tensor]:
    """float64 unit embeddings of b pairs, logit scale 7.5 and, with k > 0, prototype logits in [-1, 1]
    and two image views' SLIP projections."""
    g = torch.Generator().manual_seed(seed)
    out = {
        "image_embeds": F.normalize(torch.randn(b, D, generator=g, dtype=torch.float64), dim=-1),
        "text_embeds": F.normalize(torch.randn(b, D, generator=g, dtype=torch.float64), dim=-1),
        "logit_scale": torch.tensor(7.5, dtype=torch.float64),
    }
    if k:
        out["image_protos"] = torch.rand(b, k, generator=g, dtype=torch.float64) * 2 - 1
        out["text_protos"] = torch.rand(b, k, generator=g, dtype=torch.float64) * 2 - 1
        out["image_ssl"] = torch.randn(b, 2, D, generator=g, dtype=torch.float64)  # two views' SLIP projections
    if requires_grad:
        for v in out.values():
            v.requires_grad_(True)
    return out


def objective(name: str, **sections) -> torch.nn.Module:
    """build_objective for `name` with fields of config sections changed, e.g. clip={...}."""
    cfg = ObjectiveConfig(name=name)
    for section, fields in sections.items():
        for key, value in fields.items():
            setattr(getattr(cfg, section), key, value)
    return build_objective(cfg)


def ref_infonce(a: np.ndarray, b: np.ndarray, s: float) -> float:
    """mean_i -log( exp(s a_i.b_i) / sum_j exp(s a_i.b_j) ), one row at a time."""
    total = 0.0
    for i in range(len(a)):
        logits = [s * float(np.dot(a[i], b[j])) for j in range(len(b))]
        total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
    return total / len(a)


def ref_infonce_sym(zi: np.ndarray, zt: np.ndarray, s: float) -> float:
    """The mean of both directions."""
    return (ref_infonce(zi, zt, s) + ref_infonce(zt, zi, s)) / 2
