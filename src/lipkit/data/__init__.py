"""Data: image–caption pairs from any common layout, built-in sources, transforms, robustness.

    from lipkit.data import open_pairs, ImageTransform
    pairs = open_pairs("my_pairs.csv", ImageTransform(224))      # or a folder, .jsonl, shards, a mix
    pairs[0]  # {"image": FloatTensor[3, 224, 224], "caption": str, "index": 0, "skipped": ""}

Modules: `pairs` (map-style datasets), `formats` (folder / CSV / JSONL readers), `shards`
(WebDataset), `stream` (rank × worker splitting, mixing streams), `mix` (weighted map-style
mixes), `sources` (`open_pairs`, built-ins, the run's dataset), `transforms`, `images` (safe
decoding), `health` (bad-sample accounting), `feature_cache` (frozen towers), `tuxpaint`,
`openclipart`, `fashion_mnist`, `debian`, `svg`, `cache`.
"""
from __future__ import annotations

from ..config import ConfigError, DataConfig, VisionConfig
from .cache import DataSourceError, cache_dir
from .captions import check_templates
from .fashion_mnist import (
    FashionMNISTPairs,
    Prompts,
    fashion_mnist_prompts,
    load_fashion_mnist,
)
from .health import SkipTracker, TooManyBadSamplesError, TrackedBatches
from .images import BadSampleError, open_image
from .mix import MixedPairs
from .pairs import ArrayPairs, FilePairs, PairDataset, PairRecord
from .sources import BUILTINS, build_pairs, open_pairs, transform_from_config
from .transforms import ImageTransform

__all__ = [
    "ArrayPairs",
    "BUILTINS",
    "BadSampleError",
    "DataSourceError",
    "FashionMNISTPairs",
    "FilePairs",
    "ImageTransform",
    "MixedPairs",
    "PairDataset",
    "PairRecord",
    "Prompts",
    "SkipTracker",
    "TooManyBadSamplesError",
    "TrackedBatches",
    "build_pairs",
    "build_train_dataset",
    "cache_dir",
    "fashion_mnist_prompts",
    "load_fashion_mnist",
    "open_image",
    "open_pairs",
    "transform_from_config",
]


def build_train_dataset(data_cfg: DataConfig, seed: int = 0, vision: VisionConfig | None = None):
    """The training pairs of a run. `data.source: fashion-mnist` alone keeps its native tensors
    (1x28x28, normalised by the data set's own statistics) for a tower that reads them; every other
    source, any list in `data.sources`, and other towers (an imported RGB model) go through the
    image transform for `vision` (see `build_pairs`)."""
    if data_cfg.train_limit < 0:
        raise ConfigError(f"data.train_limit: must be >= 0 (0 = all), got {data_cfg.train_limit}")
    if not 0 <= data_cfg.caption_noise <= 1:
        raise ConfigError(f"data.caption_noise: must lie in [0, 1], got {data_cfg.caption_noise}")
    native = vision is None or (vision.channels, vision.image_size) == (1, 28)
    if not data_cfg.sources and data_cfg.source == "fashion-mnist" and native:
        try:
            templates = check_templates(data_cfg.caption_templates, "data.caption_templates")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return FashionMNISTPairs("train", templates=templates, seed=seed, limit=data_cfg.train_limit,
                                 caption_noise=data_cfg.caption_noise)
    if not data_cfg.sources and not data_cfg.source:
        raise ConfigError("data.source: empty; name a built-in source, a folder, a file or shards (or list data.sources)")
    return build_pairs(data_cfg, vision or VisionConfig(image_size=224, channels=3), seed=seed, train=True)
