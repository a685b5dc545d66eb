"""A weighted sum of named child objectives evaluated on one model output dict."""
from __future__ import annotations

import torch
from torch import nn

from lipkit.objectives.base import Objective


class WeightedSum(Objective):
    """Returns every child's terms and diagnostics as `child/key`; the weight of a `*_loss` term
    is the child's weight times the child's own weight for that term."""

    def __init__(self, children: dict[str, tuple[Objective, float]]):
        super().__init__()
        if not children:
            raise ValueError("WeightedSum needs at least one child objective")
        for name in children:
            if "/" in name:
                raise ValueError(f"child name {name!r} must not contain '/'")
        self.parts = nn.ModuleDict({name: obj for name, (obj, _) in children.items()})
        self.weights = {name: float(w) for name, (_, w) in children.items()}
        self.required_heads = frozenset().union(*(obj.required_heads for obj, _ in children.values()))
        self.uses_logit_scale = any(obj.uses_logit_scale for obj, _ in children.values())

    def term_weight(self, name: str) -> float:
        child, _, key = name.partition("/")
        return self.weights[child] * self.parts[child].term_weight(key)

    def terms(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, obj in self.parts.items():
            out.update({f"{name}/{k}": v for k, v in obj.terms(outputs).items()})
        return out
