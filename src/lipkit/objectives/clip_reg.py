"""CLIP+Reg (OBJECTIVES.md §4): CLIP + lambda * R, R a pull on positive pairs (and/or a push on
negatives for the `pairs` ablation)."""
from __future__ import annotations

import torch

from lipkit.config import ClipObjectiveConfig, ClipRegObjectiveConfig, ObjectiveConfig
from lipkit.objectives.base import HEAD_CLIP, Objective
from lipkit.objectives.clip import ClipBatch, clip_diagnostics, clip_loss
from lipkit.objectives.registration import register


def positive_reg(batch: ClipBatch, form: str) -> torch.Tensor:
    """sqdist: mean_i |z_i^I - z_i^T|^2;  neg_cos: -mean_i <z_i^I, z_i^T>."""
    if form == "sqdist":
        return (batch.image - batch.text).pow(2).sum(-1).mean()
    return -(batch.image * batch.text).sum(-1).mean()


def negative_reg(batch: ClipBatch, form: str) -> torch.Tensor:
    """The opposite push on pairs i != j: sqdist: -mean |z_i^I - z_j^T|^2;  neg_cos: +mean <z_i^I, z_j^T>.
    Local image rows against all gathered text columns minus the global diagonal; each row averages
    its N - 1 columns, so the mean over ranks is the global mean."""
    n = batch.all_text.shape[0]
    if n < 2:
        return batch.image.sum() * 0  # no negatives; keeps the graph connected
    cos = batch.image @ batch.all_text.T  # [B_local, N]
    if form == "sqdist":
        pair = batch.image.pow(2).sum(-1, keepdim=True) + batch.all_text.pow(2).sum(-1) - 2 * cos
    else:
        pair = cos
    rows = torch.arange(pair.shape[0], device=pair.device)
    off_diag_mean = (pair.sum(-1) - pair[rows, batch.labels]) / (n - 1)
    sign = -1.0 if form == "sqdist" else 1.0
    return sign * off_diag_mean.mean()


class ClipRegObjective(Objective):
    required_heads = frozenset({HEAD_CLIP})

    def __init__(self, cfg: ClipRegObjectiveConfig | None = None, clip_cfg: ClipObjectiveConfig | None = None):
        super().__init__()
        self.cfg = cfg or ClipRegObjectiveConfig()
        self.clip_cfg = clip_cfg or ClipObjectiveConfig()

    def term_weight(self, name: str) -> float:
        return self.cfg.lam if name == "reg_loss" else 1.0

    def terms(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = ClipBatch.gather(outputs)
        parts = {}
        if self.cfg.pairs in ("positive", "both"):
            parts["reg_positive"] = positive_reg(batch, self.cfg.form)
        if self.cfg.pairs in ("negative", "both"):
            parts["reg_negative"] = negative_reg(batch, self.cfg.form)
        reg = sum(parts.values())
        if self.cfg.scale_by_logit_scale:
            # s is detached: R is minimised by any s that shrinks it, so a live s would let the
            # regulariser move the temperature, which is the quantity the theory sweeps.
            reg = reg * batch.scale.detach()
        return {
            "contrastive_loss": clip_loss(batch, outputs, self.clip_cfg),
            "reg_loss": reg,
            **{k: v.detach() for k, v in parts.items()},
            **clip_diagnostics(batch),
        }


@register("clip_reg")
def build(cfg: ObjectiveConfig) -> ClipRegObjective:
    return ClipRegObjective(cfg.clip_reg, cfg.clip)
