"""CyCLIP (OBJECTIVES.md §5; Goel et al., NeurIPS 2022): CLIP plus two consistency terms on the
unscaled cosine matrices of the global batch,

    in-modal:    mean_{i,j} (S_II - S_TT)_ij^2      S_II = Z_I Z_I^T,  S_TT = Z_T Z_T^T
    cross-modal: mean_{i,j} (S_IT - S_TI)_ij^2      S_IT = Z_I Z_T^T,  S_TI = Z_T Z_I^T = S_IT^T

weighted lambda_1 and lambda_2 (0.25 each). Each rank computes its local rows of the four matrices
against the gathered columns and divides its sum by B_local * N, so the mean over ranks is the mean
over all N^2 entries. `reduction = batch_sum` multiplies both terms by N, which is what CyCLIP's
published code computes (`.square().mean() * batch_size`) and the default: its lambdas were tuned at that size.
"""
from __future__ import annotations

import torch

from lipkit.config import ClipObjectiveConfig, CyClipObjectiveConfig, ObjectiveConfig
from lipkit.objectives.base import HEAD_CLIP, Objective
from lipkit.objectives.clip import ClipBatch, clip_diagnostics, clip_loss
from lipkit.objectives.registration import register


def consistency_terms(batch: ClipBatch, reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """(in-modal, cross-modal) shares of this rank; their means over ranks are the global terms.
    `reduction`: "mean" or "batch_sum" (see the module docstring)."""
    rows, n = batch.image.shape[0], batch.all_image.shape[0]
    inmodal = (batch.image @ batch.all_image.T - batch.text @ batch.all_text.T).pow(2).sum()
    crossmodal = (batch.image @ batch.all_text.T - batch.text @ batch.all_image.T).pow(2).sum()
    denominator = rows * n if reduction == "mean" else rows
    return inmodal / denominator, crossmodal / denominator


class CyClipObjective(Objective):
    required_heads = frozenset({HEAD_CLIP})

    def __init__(self, cfg: CyClipObjectiveConfig | None = None, clip_cfg: ClipObjectiveConfig | None = None):
        super().__init__()
        self.cfg = cfg or CyClipObjectiveConfig()
        self.clip_cfg = clip_cfg or ClipObjectiveConfig()

    def term_weight(self, name: str) -> float:
        return {"inmodal_loss": self.cfg.lambda_inmodal, "crossmodal_loss": self.cfg.lambda_crossmodal}.get(name, 1.0)

    def terms(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = ClipBatch.gather(outputs)
        inmodal, crossmodal = consistency_terms(batch, self.cfg.reduction)
        return {
            "contrastive_loss": clip_loss(batch, outputs, self.clip_cfg),
            "inmodal_loss": inmodal,
            "crossmodal_loss": crossmodal,
            **clip_diagnostics(batch),
        }


@register("cyclip")
def build(cfg: ObjectiveConfig) -> CyClipObjective:
    return CyClipObjective(cfg.cyclip, cfg.clip)
