"""Objectives by name: each objective module registers a builder `ObjectiveConfig -> Objective`."""
from __future__ import annotations

from typing import Callable

from lipkit.config import ConfigError, ObjectiveConfig
from lipkit.objectives.base import Objective

_REGISTRY: dict[str, Callable[[ObjectiveConfig], Objective]] = {}


def register(name: str):
    def deco(builder: Callable[[ObjectiveConfig], Objective]):
        _REGISTRY[name] = builder
        return builder

    return deco


def available_objectives() -> list[str]:
    return sorted(_REGISTRY)


def build_objective(cfg: ObjectiveConfig) -> Objective:
    """The objective `cfg.name` names; a one-line ConfigError for an unknown name or a bad setting."""
    if cfg.name not in _REGISTRY:
        raise ConfigError(
            f"objective.name: unknown objective '{cfg.name}'; available: {', '.join(available_objectives())}"
        )
    cfg.validate()
    return _REGISTRY[cfg.name](cfg)
