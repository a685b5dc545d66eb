"""The square loss on similarities (OBJECTIVES.md §5), the non-InfoNCE baseline of Chen et al.:

    L = mean_i (s_ii - 1)^2  +  w * mean_{i != j} s_ij^2,     s_ij = <z_i^I, z_j^T> (unscaled cosine)

over the global batch of N pairs, w = `negative_weight` (1). It is two-sided: positive cosines are
pulled to 1 and negative cosines to 0 from either side (-0.5 costs as much as +0.5), where InfoNCE
only ranks each positive above its negatives. The negative mean runs over all N(N-1) ordered pairs,
so it already treats image->text and text->image alike. Each rank scores its local image rows
against the gathered text columns (every row has N - 1 negatives), so the mean over ranks of its
share is the global value. No temperature: the model's logit scale is not used.
"""
from __future__ import annotations

import torch

from lipkit.config import ObjectiveConfig, SquareObjectiveConfig
from lipkit.distributed import all_gather_with_grad, global_row_offset
from lipkit.objectives.base import HEAD_CLIP, Objective, at_least_fp32
from lipkit.objectives.registration import register


def square_terms(image: torch.Tensor, all_text: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) shares: mean over local rows of (s_ii - 1)^2 and of
    sum_{j != i} s_ij^2 / (N - 1). `offset` is the global index of this rank's first row."""
    n = all_text.shape[0]
    cos = image @ all_text.T  # [B_local, N]
    rows = torch.arange(image.shape[0], device=image.device)
    diagonal = cos[rows, rows + offset]
    positive = (diagonal - 1).pow(2).mean()
    if n < 2:
        return positive, cos.sum() * 0  # no negatives; keeps the graph connected
    negative = ((cos.pow(2).sum(-1) - diagonal.pow(2)) / (n - 1)).mean()
    return positive, negative


class SquareObjective(Objective):
    required_heads = frozenset({HEAD_CLIP})
    uses_logit_scale = False  # unscaled cosines

    def __init__(self, cfg: SquareObjectiveConfig | None = None):
        super().__init__()
        self.cfg = cfg or SquareObjectiveConfig()

    def term_weight(self, name: str) -> float:
        return self.cfg.negative_weight if name == "negative_loss" else 1.0

    def terms(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = at_least_fp32(outputs["image_embeds"])
        text = at_least_fp32(outputs["text_embeds"])
        positive, negative = square_terms(image, all_gather_with_grad(text), global_row_offset(image.shape[0]))
        with torch.no_grad():
            positive_cosine = (image * text).sum(-1).mean()
        return {"positive_loss": positive, "negative_loss": negative, "positive_cosine": positive_cosine}


@register("square")
def build(cfg: ObjectiveConfig) -> SquareObjective:
    return SquareObjective(cfg.square)
