"""Objectives by name. Each module registers a builder `ObjectiveConfig -> Objective`."""
from __future__ import annotations

from typing import Callable

from lipkit.config import ConfigError, ObjectiveConfig
from lipkit.objectives.base import HEAD_CLIP, HEAD_PROTOTYPES, Objective

_REGISTRY: dict[str, Callable[[ObjectiveConfig], Objective]] = {}


def register(name: str):
    def deco(builder: Callable[[ObjectiveConfig], Objective]):
        _REGISTRY[name] = builder
        return builder

    return deco


def available_objectives() -> list[str]:
    return sorted(_REGISTRY)


def build_objective(cfg: ObjectiveConfig) -> Objective:
    if cfg.name not in _REGISTRY:
        raise ConfigError(
            f"objective.name: unknown objective '{cfg.name}'; available: {', '.join(available_objectives())}"
        )
    return _REGISTRY[cfg.name](cfg)


# Importing the modules registers them.
from lipkit.objectives import clip, clip_reg, cyclip, nclip, siglip, square, xclip  # noqa: E402,F401

__all__ = ["HEAD_CLIP", "HEAD_PROTOTYPES", "Objective", "available_objectives", "build_objective", "register"]
