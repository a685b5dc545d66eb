"""Data sources: Fashion-MNIST image-caption pairs (built in), the cache they live in."""
from __future__ import annotations

from ..config import ConfigError, DataConfig
from .cache import DataSourceError, cache_dir
from .captions import check_templates
from .fashion_mnist import (
    FashionMNISTPairs,
    Prompts,
    fashion_mnist_prompts,
    load_fashion_mnist,
)

__all__ = [
    "DataSourceError",
    "FashionMNISTPairs",
    "Prompts",
    "build_train_dataset",
    "cache_dir",
    "fashion_mnist_prompts",
    "load_fashion_mnist",
]


def build_train_dataset(data_cfg: DataConfig, seed: int = 0) -> FashionMNISTPairs:
    """The training pairs for `data_cfg.source`, captioned with `data_cfg.caption_templates`."""
    if data_cfg.source != "fashion-mnist":
        raise ConfigError(f"data.source: unknown source {data_cfg.source!r}; available: 'fashion-mnist'")
    if data_cfg.train_limit < 0:
        raise ConfigError(f"data.train_limit: must be >= 0 (0 = all), got {data_cfg.train_limit}")
    try:
        templates = check_templates(data_cfg.caption_templates, "data.caption_templates")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return FashionMNISTPairs("train", templates=templates, seed=seed, limit=data_cfg.train_limit)
