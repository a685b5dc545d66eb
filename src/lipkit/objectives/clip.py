"""CLIP InfoNCE (OBJECTIVES.md §1): local rows against the globally gathered columns."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lipkit.config import ClipObjectiveConfig, ObjectiveConfig
from lipkit.distributed import all_gather_with_grad, global_row_offset
from lipkit.objectives.base import HEAD_CLIP, Objective, at_least_fp32
from lipkit.objectives.registration import register


@dataclass
class ClipBatch:
    """This rank's embeddings, the gathered global columns, and where this rank's rows sit in them."""

    image: torch.Tensor  # [B_local, D]
    text: torch.Tensor  # [B_local, D]
    all_image: torch.Tensor  # [N, D], rank order, gradient flows back to every rank
    all_text: torch.Tensor  # [N, D]
    scale: torch.Tensor  # scalar logit scale s
    offset: int  # global index of this rank's first row

    @classmethod
    def gather(cls, outputs: dict[str, torch.Tensor]) -> "ClipBatch":
        image = at_least_fp32(outputs["image_embeds"])
        text = at_least_fp32(outputs["text_embeds"])
        return cls(
            image=image,
            text=text,
            all_image=all_gather_with_grad(image),
            all_text=all_gather_with_grad(text),
            scale=at_least_fp32(outputs["logit_scale"]),
            offset=global_row_offset(image.shape[0]),
        )

    @property
    def labels(self) -> torch.Tensor:
        return torch.arange(self.image.shape[0], device=self.image.device) + self.offset


def info_nce(batch: ClipBatch, direction_reduction: str = "mean") -> torch.Tensor:
    """This rank's share of the symmetric InfoNCE loss; its mean over ranks is the global loss.
    `direction_reduction`: "mean" or "sum" of the two directions."""
    labels = batch.labels
    ce_i2t = F.cross_entropy(batch.scale * batch.image @ batch.all_text.T, labels)
    ce_t2i = F.cross_entropy(batch.scale * batch.text @ batch.all_image.T, labels)
    total = ce_i2t + ce_t2i
    return total / 2 if direction_reduction == "mean" else total


def clip_diagnostics(batch: ClipBatch) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {
            "logit_scale": batch.scale.detach().clone(),
            "positive_cosine": (batch.image * batch.text).sum(-1).mean(),
        }


class ClipObjective(Objective):
    required_heads = frozenset({HEAD_CLIP})

    def __init__(self, cfg: ClipObjectiveConfig | None = None):
        super().__init__()
        self.cfg = cfg or ClipObjectiveConfig()

    def terms(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = ClipBatch.gather(outputs)
        return {"contrastive_loss": info_nce(batch, self.cfg.direction_reduction), **clip_diagnostics(batch)}


@register("clip")
def build(cfg: ObjectiveConfig) -> ClipObjective:
    return ClipObjective(cfg.clip)
