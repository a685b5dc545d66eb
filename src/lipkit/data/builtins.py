"""The built-in data sources, one entry each: the table every place that names a built-in reads
(`open_pairs("NAME[:SPLIT]")`, a run's training pairs, `lipkit data fetch`, the data sets of
`lipkit eval`).

An entry gives the source's licence, how to fetch it into the cache, its pairs for a split (through
the run's image transform), the `eval.split`s an evaluation on it offers (none: not an evaluation
data set) and, for Fashion-MNIST, the native tensors that a tower of their shape trains on as they
are. Each source's own module holds its constants (licence, package); this module imports only
the standard library and those torch-free modules, so that the command line can list the names
without loading torch; what a source's pairs need is imported when the source is used.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import openclipart, tuxpaint

if TYPE_CHECKING:
    from lipkit.config import DataConfig, VisionConfig

    from .pairs import PairDataset
    from .transforms import ImageTransform

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class PairOptions:
    """What a built-in's pairs are made with: the run's data settings."""

    transform: ImageTransform | None
    seed: int
    templates: Sequence[str]  # caption templates, for the labelled sources
    max_pixels: int


@dataclass(frozen=True)
class NativeTensors:
    """A source's own training tensors, which a tower of their shape trains on as they are."""

    channels: int
    image_size: int
    normalization: str  # the data.normalization a run trained on them records
    pairs: Callable[[DataConfig, int], Any]  # (data settings, seed) -> the training pairs


@dataclass(frozen=True)
class BuiltinSource:
    name: str
    licence: str
    fetch: Callable[[bool], tuple[str, int]]  # (force) -> (where it is kept, how many items)
    pairs: Callable[[str, PairOptions], PairDataset]  # (split, options); split "" is the default
    eval_splits: tuple[str, ...] = ()  # the eval.split values of `lipkit eval --dataset NAME`
    native: NativeTensors | None = None


# ---------------------------------------------------------------------------------- Tux Paint
def _fetch_tuxpaint(force: bool) -> tuple[str, int]:
    from .cache import fetched_again

    where = fetched_again(tuxpaint.data_dir(), tuxpaint.fetch) if force else tuxpaint.fetch()
    return str(where), len(tuxpaint.load_tuxpaint())


def _tuxpaint_pairs(split: str, o: PairOptions) -> PairDataset:
    from lipkit.config import ConfigError

    from .pairs import FilePairs, PairRecord
    from .tuxpaint import load_tuxpaint, tuxpaint_holdout_split, tuxpaint_validation_split

    if split in ("", "all"):
        items = load_tuxpaint()
    elif split in ("train", "holdout"):
        train, holdout = tuxpaint_holdout_split()
        items = train if split == "train" else holdout
    elif split in ("fit", "validation"):
        fit, validation = tuxpaint_validation_split()
        items = fit if split == "fit" else validation
    else:
        raise ConfigError(f"source tuxpaint: split must be all, train, holdout, fit or validation, got {split!r}")
    records = [PairRecord(str(it.image), it.captions, it.label) for it in items]
    return FilePairs(records, o.transform, labels=True, seed=o.seed, name=f"tuxpaint:{split or 'all'}",
                     max_pixels=o.max_pixels)


# ---------------------------------------------------------------------------------- Open Clip Art
def _fetch_openclipart(force: bool) -> tuple[str, int]:
    from .cache import fetched_again

    where = fetched_again(openclipart.data_dir(), openclipart.fetch) if force else openclipart.fetch()
    return str(where), len(openclipart.load_openclipart())


def _openclipart_pairs(split: str, o: PairOptions) -> PairDataset:
    from lipkit.config import ConfigError

    from .openclipart import load_openclipart
    from .pairs import FilePairs, PairRecord

    if split not in ("", "all"):
        raise ConfigError(f"source openclipart: has no split {split!r} (only all)")
    records = [PairRecord(str(it.image), it.captions) for it in load_openclipart()]
    return FilePairs(records, o.transform, seed=o.seed, name="openclipart", max_pixels=o.max_pixels)


# ---------------------------------------------------------------------------------- labelled arrays
def _fetch_fashion_mnist(force: bool) -> tuple[str, int]:
    from . import fashion_mnist
    from .cache import fetched_again

    ensure = fashion_mnist.ensure_files
    where = fetched_again(fashion_mnist.data_dir(), ensure) if force else ensure()
    return str(where), sum(len(fashion_mnist.load_fashion_mnist(split)[1]) for split in ("train", "test"))


def _templated(name: str, o: PairOptions, load: Callable[[], tuple[Any, Any, Sequence[str]]]) -> PairDataset:
    """Labelled arrays, `load() -> (images, labels, class names)`, captioned by the run's
    templates filled with the class name."""
    from .captions import check_templates, fill
    from .pairs import ArrayPairs, PairRecord

    templates = check_templates(o.templates, "data.caption_templates")
    images, labels, class_names = load()
    per_class = [tuple(fill(t, n) for t in templates) for n in class_names]
    records = [PairRecord(f"{name}[{i}]", per_class[int(y)], int(y)) for i, y in enumerate(labels)]
    return ArrayPairs(images, records, o.transform, seed=o.seed, name=name)


def _fashion_mnist_pairs(split: str, o: PairOptions) -> PairDataset:
    def load():
        from lipkit.config import ConfigError

        from .fashion_mnist import fashion_mnist_prompts, load_fashion_mnist

        if split not in ("", "train", "test"):
            raise ConfigError(f"source fashion-mnist: split must be train or test, got {split!r}")
        images, labels = load_fashion_mnist(split or "train")
        return images, labels, fashion_mnist_prompts().class_names

    return _templated("fashion-mnist", o, load)


def _fashion_mnist_native(data: DataConfig, seed: int):
    from lipkit.config import ConfigError

    from .captions import check_templates
    from .fashion_mnist import FashionMNISTPairs

    try:
        templates = check_templates(data.caption_templates, "data.caption_templates")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return FashionMNISTPairs("train", templates=templates, seed=seed, limit=data.train_limit,
                             caption_noise=data.caption_noise)


def _fetch_digits(force: bool) -> tuple[str, int]:
    from sklearn.datasets import load_digits

    return "the scikit-learn package (bundled)", len(load_digits().target)


def _digits_pairs(split: str, o: PairOptions) -> PairDataset:
    def load():
        import numpy as np
        from sklearn.datasets import load_digits

        d = load_digits()
        images = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        return images, d.target.astype(np.int64), [f"digit {n}" for n in DIGIT_NAMES]

    return _templated("digits", o, load)


BUILTIN_SOURCES: dict[str, BuiltinSource] = {s.name: s for s in (
    BuiltinSource("fashion-mnist", "MIT (Zalando Research; Debian package dataset-fashion-mnist)",
                  _fetch_fashion_mnist, _fashion_mnist_pairs, eval_splits=("test", "validation"),
                  native=NativeTensors(1, 28, "fashion-mnist", _fashion_mnist_native)),
    BuiltinSource("digits", "BSD-3-Clause (scikit-learn's bundled copy of the UCI digits)", _fetch_digits,
                  _digits_pairs),
    BuiltinSource("tuxpaint", tuxpaint.LICENCE, _fetch_tuxpaint, _tuxpaint_pairs, eval_splits=("test", "validation")),
    BuiltinSource("openclipart", openclipart.LICENCE, _fetch_openclipart, _openclipart_pairs),
)}


def native_tensors(data: DataConfig, vision: VisionConfig | None) -> NativeTensors | None:
    """The native tensors a run trains on: those of its one built-in source (`data.source`, no
    `data.sources`) when the tower reads their shape (or no tower is given); else None."""
    source = BUILTIN_SOURCES.get(data.source) if not data.sources else None
    native = source.native if source is not None else None
    if native is None or (vision is not None and (vision.channels, vision.image_size) != (native.channels,
                                                                                           native.image_size)):
        return None
    return native


def train_normalization(data: DataConfig, vision: VisionConfig | None) -> str:
    """How a run's training images are normalised: what its config records as data.normalization."""
    native = native_tensors(data, vision)
    return native.normalization if native is not None else "mean-std"
