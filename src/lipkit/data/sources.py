"""`open_pairs(spec)`: any source of image–caption pairs behind one call.

A spec is a string or a `SourceConfig` (or a list of them, mixed by weight):

    open_pairs("photos/")                               # folder: photos/**/x.jpg + x.txt
    open_pairs("pairs.csv")                             # CSV/TSV with image and caption columns
    open_pairs("pairs.jsonl")                           # JSON Lines
    open_pairs("shards/train-{000..127}.tar")           # WebDataset shards (streamed)
    open_pairs("tuxpaint:train")                        # built-in: NAME[:SPLIT]
    open_pairs([SourceConfig("tuxpaint", split="train", weight=1), SourceConfig("openclipart", weight=2)])

Map-style sources give a `PairDataset` (its size counted when opened); shards give a stream
(`ShardStream`); a mix is map-style when all its parts are (`MixedPairs`), else a stream
(`MixedStream`). Built-ins (lipkit.data.builtins): fashion-mnist (train|test, templated captions),
digits (sklearn, templated), tuxpaint (all|train|holdout|fit|validation; train = fit + validation),
openclipart.

`build_train_dataset(data, seed, vision)` is a run's training pairs: `build_pairs`, or a built-in's
native tensors for a tower that reads them (Fashion-MNIST's 1x28x28).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from lipkit.config import ConfigError, DataConfig, SourceConfig, VisionConfig

from .builtins import BUILTIN_SOURCES, PairOptions, native_tensors
from .cache import DataSourceError
from .captions import check_templates
from .images import DEFAULT_MAX_PIXELS
from .mix import MixedPairs
from .pairs import ArrayPairs, FilePairs, PairDataset
from .stream import EpochStream, MapStream, MixedStream
from .transforms import ImageTransform

BUILTINS = tuple(BUILTIN_SOURCES)
DEFAULT_TEMPLATES = DataConfig().caption_templates


def transform_from_config(data: DataConfig, vision: VisionConfig, train: bool = True) -> ImageTransform:
    """The image transform a run applies (train: with its augmentation; else the evaluation one)."""
    mean, std = tuple(data.image_mean), tuple(data.image_std)
    if len(mean) != vision.channels or len(std) != vision.channels:
        hint = (f"; the image tower reads grayscale images (as fashion-tiny's does): for colour images set "
                f"model.vision.channels={len(mean)}, or data.image_mean=[0.5] and data.image_std=[0.5] to train "
                f"on them in gray"
                if vision.channels == 1 else f"; give one value per channel, or set model.vision.channels={len(mean)}")
        raise ConfigError(f"data.image_mean / data.image_std have {len(mean)} / {len(std)} values but "
                          f"model.vision.channels is {vision.channels}{hint}")
    if len(data.crop_scale) != 2:
        raise ConfigError(f"data.crop_scale: expected [min, max], got {data.crop_scale}")
    try:
        return ImageTransform(
            vision.image_size, mean, std, crop=data.crop if train else "center",
            scale=(float(data.crop_scale[0]), float(data.crop_scale[1])), flip=data.hflip and train,
        )
    except ValueError as e:
        raise ConfigError(f"data: {e}") from None


def as_source_config(spec: str | SourceConfig) -> SourceConfig:
    """A SourceConfig; "NAME:SPLIT" of a built-in becomes path NAME, split SPLIT."""
    import dataclasses

    src = spec if isinstance(spec, SourceConfig) else SourceConfig(path=spec) if isinstance(spec, str) else None
    if src is None or not src.path:
        raise ConfigError(f"data source: expected a path, pattern or built-in name, got {spec!r}")
    name, _, split = src.path.partition(":")
    if name in BUILTINS and src.format in ("auto", "builtin"):
        return dataclasses.replace(src, path=name, format="builtin", split=src.split or split)
    return src


def detect_format(src: SourceConfig) -> str:
    if src.format != "auto":
        return src.format
    path = src.path
    if path in BUILTINS:
        return "builtin"
    if ".tar" in path or "{" in path or "::" in path:
        return "webdataset"
    p = Path(path)
    if p.is_dir():
        return "folder"
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv", ".jsonl"):
        return suffix[1:]
    if not p.exists():
        raise DataSourceError(f"{path}: no such file or folder (and not a built-in source: {', '.join(BUILTINS)})")
    raise DataSourceError(f"{path}: cannot tell its format; use a folder, .csv, .tsv, .jsonl or .tar shards, or set format")


def open_source(spec: str | SourceConfig, transform: ImageTransform | None, *, seed: int = 0,
                templates: Sequence[str] = DEFAULT_TEMPLATES, max_pixels: int = DEFAULT_MAX_PIXELS,
                shuffle_buffer: int = 1000) -> PairDataset | EpochStream:
    """One source: a PairDataset (map-style) or a ShardStream."""
    from . import formats

    src = as_source_config(spec)
    if src.limit < 0:
        raise ConfigError(f"source {src.path}: limit must be >= 0 (0 = all), got {src.limit}")
    fmt = detect_format(src)
    if fmt == "webdataset":
        from .shards import ShardStream

        return ShardStream(src.path, transform, seed=seed, shuffle_buffer=shuffle_buffer,
                           caption_field=src.caption_column, max_pixels=max_pixels, labels=bool(src.label_column))
    if fmt == "builtin":
        if src.path not in BUILTIN_SOURCES:
            raise ConfigError(f"unknown built-in source {src.path!r}; available: {', '.join(BUILTINS)}")
        ds = BUILTIN_SOURCES[src.path].pairs(src.split, PairOptions(transform, seed, templates, max_pixels))
    else:
        if fmt == "folder":
            records, skipped = formats.read_folder(src.path)
        elif fmt in ("csv", "tsv"):
            records, skipped = formats.read_table(src.path, src.image_column, src.caption_column, src.label_column,
                                                  delimiter="\t" if fmt == "tsv" else ",")
        elif fmt == "jsonl":
            records, skipped = formats.read_jsonl(src.path, src.image_column, src.caption_column, src.label_column)
        else:
            raise ConfigError(f"source {src.path}: unknown format {fmt!r}")
        ds = FilePairs(records, transform, labels=bool(src.label_column), seed=seed, name=src.path,
                       skipped=skipped, max_pixels=max_pixels)
    if src.limit:
        ds.records = ds.records[: src.limit]
        if isinstance(ds, ArrayPairs):
            ds.images = ds.images[: src.limit]
    if len(ds) == 0:
        first = f"; e.g. {ds.skipped[0][0]}: {ds.skipped[0][1]}" if ds.skipped else ""
        raise DataSourceError(f"{src.path}: no usable image-caption pairs{first}")
    return ds


def open_pairs(spec, transform: ImageTransform | None = None, *, seed: int = 0,
               templates: Sequence[str] = DEFAULT_TEMPLATES, max_pixels: int = DEFAULT_MAX_PIXELS,
               shuffle_buffer: int = 1000):
    """A source, or several mixed by `weight` (see the module docstring)."""
    if isinstance(spec, (list, tuple)):
        specs = [as_source_config(s) for s in spec]
        if not specs:
            raise ConfigError("data.sources: empty list")
        if len(specs) == 1:
            return open_pairs(specs[0], transform, seed=seed, templates=templates, max_pixels=max_pixels,
                              shuffle_buffer=shuffle_buffer)
        parts = [open_source(s, transform, seed=seed, templates=templates, max_pixels=max_pixels,
                             shuffle_buffer=shuffle_buffer) for s in specs]
        weights = [s.weight for s in specs]
        if any(not (w > 0) for w in weights):
            raise ConfigError(f"data.sources: every weight must be > 0, got {weights}")
        if all(isinstance(p, PairDataset) for p in parts):
            return MixedPairs(parts, weights, seed=seed)
        streams = [p if isinstance(p, EpochStream) else MapStream(p, seed=seed) for p in parts]
        return MixedStream(streams, weights, seed=seed)
    return open_source(spec, transform, seed=seed, templates=templates, max_pixels=max_pixels,
                       shuffle_buffer=shuffle_buffer)


def _check_sources_exist(data: DataConfig) -> None:
    """A source file or folder that is not there, named before the image settings are checked:
    it is the first thing to fix, and the settings may be right for the data once it is found."""
    key = "data.sources" if data.sources else "data.source"
    for spec in data.sources or [data.source]:
        src = as_source_config(spec)
        try:
            fmt = detect_format(src)
        except DataSourceError as e:
            raise ConfigError(f"{key}: {e}") from None
        if fmt in ("folder", "csv", "tsv", "jsonl") and not Path(src.path).exists():
            raise ConfigError(f"{key}: {src.path}: cannot open (No such file or directory)")


def build_pairs(data: DataConfig, vision: VisionConfig, seed: int = 0, train: bool = True):
    """The pairs `data.sources` (or `data.source`) names, with the run's image transform."""
    if not 0 <= data.max_bad_fraction <= 1:
        raise ConfigError(f"data.max_bad_fraction: must lie in [0, 1], got {data.max_bad_fraction}")
    if data.max_image_pixels < 1:
        raise ConfigError(f"data.max_image_pixels: must be >= 1, got {data.max_image_pixels}")
    spec = list(data.sources) if data.sources else data.source
    _check_sources_exist(data)
    transform = transform_from_config(data, vision, train)
    try:
        templates = check_templates(data.caption_templates, "data.caption_templates")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        ds = open_pairs(spec, transform, seed=seed, templates=templates, max_pixels=data.max_image_pixels,
                        shuffle_buffer=data.shuffle_buffer)
    except (DataSourceError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{'data.sources' if data.sources else 'data.source'}: {e}") from None
    if data.train_limit and isinstance(ds, PairDataset):
        ds.records = ds.records[: data.train_limit]
        if isinstance(ds, ArrayPairs):
            ds.images = ds.images[: data.train_limit]
    if train and data.caption_noise:
        parts = ds.datasets if isinstance(ds, MixedPairs) else [ds]
        for part in parts:
            if not isinstance(part, PairDataset):
                raise ConfigError(f"data.caption_noise: needs map-style sources with labels; "
                                  f"{getattr(part, 'name', type(part).__name__)} is a stream")
            try:
                part.set_caption_noise(data.caption_noise)
            except ValueError as e:
                raise ConfigError(f"data.caption_noise: {e}") from None
    return ds


def build_train_dataset(data_cfg: DataConfig, seed: int = 0, vision: VisionConfig | None = None):
    """The training pairs of a run. A built-in source with native tensors (`data.source:
    fashion-mnist` alone: 1x28x28, normalised by the data set's own statistics) gives them as they
    are to a tower that reads them; every other source, any list in `data.sources`, and other
    towers (an imported RGB model) go through the image transform for `vision` (see `build_pairs`)."""
    if data_cfg.train_limit < 0:
        raise ConfigError(f"data.train_limit: must be >= 0 (0 = all), got {data_cfg.train_limit}")
    if not 0 <= data_cfg.caption_noise <= 1:
        raise ConfigError(f"data.caption_noise: must lie in [0, 1], got {data_cfg.caption_noise}")
    native = native_tensors(data_cfg, vision)
    if native is not None:
        from . import fashion_mnist

        dataset = native.pairs(data_cfg, seed)
        return attach_augment(dataset, data_cfg, seed, native.image_size, (fashion_mnist.MEAN,), (fashion_mnist.STD,))
    if not data_cfg.sources and not data_cfg.source:
        raise ConfigError("data.source: empty; name a built-in source, a folder, a file or shards (or list data.sources)")
    vision = vision or VisionConfig(image_size=224, channels=3)
    dataset = build_pairs(data_cfg, vision, seed=seed, train=True)
    transform = transform_from_config(data_cfg, vision, train=True)
    return attach_augment(dataset, data_cfg, seed, vision.image_size, transform.mean, transform.std, transform)


def _augmentable_parts(dataset) -> list:
    """The datasets inside `dataset` that make items (through mixes and map-style streams)."""
    inner = getattr(dataset, "datasets", None) or getattr(dataset, "streams", None)
    if inner is not None:
        return [part for d in inner for part in _augmentable_parts(d)]
    wrapped = getattr(dataset, "dataset", None)
    return _augmentable_parts(wrapped) if wrapped is not None else [dataset]


def attach_augment(dataset, data_cfg: DataConfig, seed: int, size: int, mean, std, transform=None):
    """`dataset` with data.image_views and data.text_augment attached to every part that makes
    items (lipkit.data.augment.TrainingAugment); unchanged when both are off."""
    from .augment import TrainingAugment, view_maker
    from .text_augment import TextAugmenter

    views = view_maker(data_cfg, size, mean, std, transform)
    text = TextAugmenter(data_cfg.text_augment) if data_cfg.text_augment.enabled else None
    if views is None and text is None:
        return dataset
    if text is not None and text.missing_wordnet:
        logging.getLogger(__name__).warning(
            "lipkit: warning: data.text_augment: WordNet is not installed (Debian's wordnet-base), so synonym "
            "replacement and insertion do nothing")
    augment = TrainingAugment(seed, views, text)
    for part in _augmentable_parts(dataset):
        part.augment = augment
    return dataset
