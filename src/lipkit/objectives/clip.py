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

    def other_views(self, outputs: dict[str, torch.Tensor]) -> list["ClipBatch"]:
        """The batches of the image views after the first (`image_view_embeds`), sharing this
        batch's text columns; none with one view."""
        if "image_view_embeds" not in outputs:
            return []
        views = at_least_fp32(outputs["image_view_embeds"])
        return [ClipBatch(image=views[:, v], text=self.text, all_image=all_gather_with_grad(views[:, v]),
                          all_text=self.all_text, scale=self.scale, offset=self.offset)
                for v in range(1, views.shape[1])]


def info_nce(batch: ClipBatch, direction_reduction: str = "mean", label_smoothing: float = 0.0) -> torch.Tensor:
    """This rank's share of the symmetric InfoNCE loss; its mean over ranks is the global loss.
    `direction_reduction`: "mean" or "sum" of the two directions; `label_smoothing` eps: each row's
    target is 1 - eps on its positive plus eps / N on each of the N global columns (a row's loss
    reads only its own row, so the mean over ranks is still the global loss)."""
    labels = batch.labels
    ce_i2t = F.cross_entropy(batch.scale * batch.image @ batch.all_text.T, labels, label_smoothing=label_smoothing)
    ce_t2i = F.cross_entropy(batch.scale * batch.text @ batch.all_image.T, labels, label_smoothing=label_smoothing)
    total = ce_i2t + ce_t2i
    return total / 2 if direction_reduction == "mean" else total


def clip_loss(batch: ClipBatch, outputs: dict[str, torch.Tensor], cfg: ClipObjectiveConfig) -> torch.Tensor:
    """The CLIP term as `cfg` sets it: InfoNCE of the first view (`batch`) with label smoothing,
    or, with views: all, its mean over every image view (clip-rocket's multi-view CLIP)."""
    batches = [batch, *batch.other_views(outputs)] if cfg.views == "all" else [batch]
    return sum(info_nce(b, cfg.direction_reduction, cfg.label_smoothing) for b in batches) / len(batches)


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
        return {"contrastive_loss": clip_loss(batch, outputs, self.cfg), **clip_diagnostics(batch)}


@register("clip")
def build(cfg: ObjectiveConfig) -> ClipObjective:
    return ClipObjective(cfg.clip)
