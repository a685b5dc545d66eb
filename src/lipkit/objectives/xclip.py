"""xCLIP (OBJECTIVES.md §3): w_clip * CLIP + w_nclip * nCLIP on the same forward pass."""
from __future__ import annotations

from lipkit.config import ObjectiveConfig
from lipkit.objectives.clip import ClipObjective
from lipkit.objectives.composite import WeightedSum
from lipkit.objectives.nclip import NClipObjective
from lipkit.objectives.registration import register


@register("xclip")
def build(cfg: ObjectiveConfig) -> WeightedSum:
    return WeightedSum(
        {
            "clip": (ClipObjective(cfg.clip), cfg.xclip.w_clip),
            "nclip": (NClipObjective(cfg.nclip), cfg.xclip.w_nclip),
        }
    )
