"""Where objective builders register by name (`@register("clip")`); lipkit.objectives.registry
imports every built-in objective module and looks names up here."""
from __future__ import annotations

from typing import Callable

from lipkit.config import ObjectiveConfig
from lipkit.objectives.base import Objective

BUILDERS: dict[str, Callable[[ObjectiveConfig], Objective]] = {}


def register(name: str):
    def deco(builder: Callable[[ObjectiveConfig], Objective]):
        BUILDERS[name] = builder
        return builder

    return deco
