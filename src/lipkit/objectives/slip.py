"""SLIP (Mu et al., ECCV 2022; facebookresearch/SLIP): CLIP + ssl_weight * SimCLR.

The CLIP term is lipkit's (first view, or every view with objective.clip.views: all; label
smoothing as set). The SimCLR term is NT-Xent between the last two image views' projections
(`image_ssl`, the model's "ssl" head: SLIP's 3-layer MLP), temperature tau: for each of the 2N
projections of the global batch, the positive is its other view and the negatives are the other
2N - 2 projections,

    l(a_i) = -log exp(<a_i, b_i>/tau) / (sum_j exp(<a_i, b_j>/tau) + sum_{j != i} exp(<a_i, a_j>/tau))

and the loss is the mean of l over the 2N anchors (SLIP's SIMCLRLoss). With data.image_views = 2
the SimCLR views are the first (also CLIP's) and the second; with 3, SLIP's own layout, views 2
and 3, and CLIP reads view 1.

Distributed: each rank scores its local anchors against the gathered columns (with gradient), so
the mean over ranks is the global loss and every gradient that of one process on the whole batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lipkit.config import ClipObjectiveConfig, ObjectiveConfig, SlipObjectiveConfig
from lipkit.distributed import all_gather_with_grad, global_row_offset
from lipkit.objectives.base import HEAD_CLIP, HEAD_SSL, Objective, at_least_fp32
from lipkit.objectives.clip import ClipBatch, clip_diagnostics, clip_loss
from lipkit.objectives.registration import register

def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """This rank's share of SimCLR's loss for the local view pairs (a_i, b_i), [B_local, d] each."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    all_a, all_b = all_gather_with_grad(a), all_gather_with_grad(b)
    rows = torch.arange(a.shape[0], device=a.device)
    labels = rows + global_row_offset(a.shape[0])
    self_mask = F.one_hot(labels, all_a.shape[0]).bool()

    def anchored(q: torch.Tensor, same: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        to_other = q @ other.T / temperature  # the positive sits at column `labels`
        to_same = (q @ same.T / temperature).masked_fill(self_mask, float("-inf"))  # not itself
        return F.cross_entropy(torch.cat([to_other, to_same], dim=1), labels)

    return (anchored(a, all_a, all_b) + anchored(b, all_b, all_a)) / 2


class SlipObjective(Objective):
    required_heads = frozenset({HEAD_CLIP, HEAD_SSL})
    image_views = 3  # SLIP's layout: CLIP on the first, SimCLR between the other two

    def __init__(self, cfg: SlipObjectiveConfig | None = None, clip_cfg: ClipObjectiveConfig | None = None):
        super().__init__()
        self.cfg = cfg or SlipObjectiveConfig()
        self.clip_cfg = clip_cfg or ClipObjectiveConfig()

    def term_weight(self, name: str) -> float:
        return self.cfg.ssl_weight if name == "ssl_loss" else 1.0

    def terms(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "image_ssl" not in outputs or outputs["image_ssl"].shape[1] < 2:
            raise ValueError("SLIP needs two or more views of each image: set data.image_views=2 (or 3, SLIP's own)")
        views = at_least_fp32(outputs["image_ssl"])
        batch = ClipBatch.gather(outputs)
        ssl = nt_xent(views[:, -2], views[:, -1], self.cfg.temperature)
        with torch.no_grad():
            a, b = F.normalize(views[:, -2], dim=-1), F.normalize(views[:, -1], dim=-1)
            view_cosine = (a * b).sum(-1).mean()
        return {"contrastive_loss": clip_loss(batch, outputs, self.clip_cfg), "ssl_loss": ssl,
                "ssl_view_cosine": view_cosine, **clip_diagnostics(batch)}


@register("slip")
def build(cfg: ObjectiveConfig) -> SlipObjective:
    return SlipObjective(cfg.slip, cfg.clip)
