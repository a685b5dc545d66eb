"""Objectives by name: every built-in objective module, imported here so that each registers its
builder `ObjectiveConfig -> Objective` (lipkit.objectives.registration), and the look-up."""
from __future__ import annotations

from lipkit.config import ConfigError, ObjectiveConfig
from lipkit.objectives import clip, clip_reg, cyclip, nclip, siglip, slip, square, xclip  # noqa: F401  (each registers)
from lipkit.objectives.base import Objective
from lipkit.objectives.registration import BUILDERS, register  # noqa: F401  (register: re-exported)


def available_objectives() -> list[str]:
    return sorted(BUILDERS)


def build_objective(cfg: ObjectiveConfig) -> Objective:
    """The objective `cfg.name` names; a one-line ConfigError for an unknown name or a bad setting."""
    if cfg.name not in BUILDERS:
        raise ConfigError(
            f"objective.name: unknown objective '{cfg.name}'; available: {', '.join(available_objectives())}"
        )
    cfg.validate()
    return BUILDERS[cfg.name](cfg)
