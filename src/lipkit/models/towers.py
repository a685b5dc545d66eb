"""Towers by config name. A tower is an nn.Module with `width` (its pooled feature size) whose
forward maps images [B, C, H, W] (or token ids [B, L]) to pooled features [B, width], and
`lock_groups()`: its parameters in groups from input to output, which LiT locking freezes all
but the last N of; a tower with linear projections LoRA can adapt also has `projections()`: their
module names by kind ("attention", "mlp"). Pretrained towers import their dependencies only when built."""
from __future__ import annotations

from typing import Callable

from torch import nn

from lipkit.config import ConfigError, TextConfig, VisionConfig
from lipkit.models.text import TextTransformer
from lipkit.models.vision import VisionTransformer


def _efficientnet_lite0(cfg: VisionConfig) -> nn.Module:
    from lipkit.models.efficientnet import EfficientNetLite0

    return EfficientNetLite0(cfg)


def _minilm(cfg: TextConfig) -> nn.Module:
    from lipkit.models.minilm import MiniLMTower

    return MiniLMTower(cfg)


VISION_TOWERS: dict[str, Callable[[VisionConfig], nn.Module]] = {
    "vit": VisionTransformer, "efficientnet_lite0": _efficientnet_lite0}
TEXT_TOWERS: dict[str, Callable[[TextConfig], nn.Module]] = {"transformer": TextTransformer, "minilm": _minilm}


def _build(registry: dict, cfg, key: str) -> nn.Module:
    if cfg.name not in registry:
        raise ConfigError(f"{key}: unknown tower '{cfg.name}'; available: {', '.join(sorted(registry))}")
    return registry[cfg.name](cfg)


def build_vision_tower(cfg: VisionConfig) -> nn.Module:
    return _build(VISION_TOWERS, cfg, "model.vision.name")


def build_text_tower(cfg: TextConfig) -> nn.Module:
    return _build(TEXT_TOWERS, cfg, "model.text.name")
