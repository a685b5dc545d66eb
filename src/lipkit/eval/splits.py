"""What an evaluation reads: an `EvalData` (one dataset as the tasks see it) made of `Split`s,
the stratified division of labelled images that both the probes' division of a test split (done
by the tasks' Context, when asked) and the linear probe (its validation split for C) use, and how
many images an eval.*_limit reads (`limit_of`). Below every task and every dataset reader."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lipkit.config import EvalConfig

from .errors import EvalError
from .images import ImageFiles, Images


@dataclass
class Split:
    images: Images
    labels: np.ndarray | None  # class indices; None: the set has no labels
    caption: list[str] | None  # one per image; None: no captions
    captions: list[list[str]] | None  # all captions of each image (retrieval)
    key: str = ""  # names the split in an embedding store shared by datasets ("": not shared)

    def __len__(self) -> int:
        return len(self.images)

    def take(self, indices: Sequence[int], key: str = "") -> Split:
        idx = list(indices)
        images = self.images[idx] if isinstance(self.images, (np.ndarray, torch.Tensor)) else \
            self.images.take(idx) if isinstance(self.images, ImageFiles) else [self.images[i] for i in idx]
        return Split(images, None if self.labels is None else self.labels[idx],
                     None if self.caption is None else [self.caption[i] for i in idx],
                     None if self.captions is None else [self.captions[i] for i in idx], key)

    def spread(self, n: int) -> Split:
        """`n` images spread evenly over the split, in order (all when n is 0 or too large)."""
        return self if not n or n >= len(self) else self.take(spread(len(self), n), f"{self.key}[{n}]")

    def missing_captions(self) -> int:
        """How many images have no caption."""
        return len(self) if self.captions is None else sum(not c for c in self.captions)


@dataclass
class EvalData:
    name: str
    train: Split | None
    test: Split
    class_names: list[str] | None
    templates: list[str] | dict[str, list[str]]
    style: tuple[Split, Split] | None = None  # (photos, cartoons) for the style shift
    shift: Split | None = None  # a second dataset with the same classes (--shift)
    shift_name: str = ""
    # Datasets opened by path report these in their records; built-ins leave them None.
    test_split: str | None = None  # which images are the test set
    probe_train: str | None = None  # which images train the probes
    skipped: dict[str, list[tuple[str, str]]] | None = None  # unusable images, per split
    # > 0: the probes divide the test split, this share of each class training them and the rest
    # (`probe_test`) being what they score; the tasks' Context divides it once it is embedded.
    probe_division: float = 0.0
    probe_test: Split | None = None  # the probes' test images, when not the whole test split
    probe_test_split: str | None = None  # ... in words, for the records

    @property
    def has_labels(self) -> bool:
        return self.test.labels is not None

    @property
    def by_path(self) -> bool:
        """Opened by path (read whole unless a limit is set), not a built-in set."""
        return self.test_split is not None

    def subset(self, split: Split, n: int) -> np.ndarray:
        """Positions of `n` images of `split` for a task that reads fewer (all for n = 0): the
        first n of a built-in set (they come shuffled), n spread over a set opened by path
        (often ordered by class)."""
        if self.test_split is None or not n or n >= len(split):
            return np.arange(min(n or len(split), len(split)))
        return spread(len(split), n)


DIVISION_SEED = 0  # every model sees the same division of a split
# What a built-in set reads when eval.<limit> is unset (None); a set given by path is read whole.
BUILTIN_LIMITS = {"linear_train_limit": 10_000, "retrieval_limit": 1_000}


def limit_of(cfg: EvalConfig, name: str, by_path: bool) -> int:
    """eval.<name> (a `BUILTIN_LIMITS` key) as a number of images, 0 for all: when unset, all of
    a set given by path (as CLIP_benchmark reads it) and the built-in default otherwise."""
    value = getattr(cfg, name)
    if value is None:
        return 0 if by_path else BUILTIN_LIMITS[name]
    if value < 0:
        raise EvalError(f"eval.{name}: must be >= 0 (0 or null: all images), got {value}")
    return value


def spread(size: int, n: int) -> np.ndarray:
    """`n` <= `size` positions spread evenly over range(size), the first and last included."""
    return np.linspace(0, size - 1, n).round().astype(np.int64)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, val): about `val_fraction` of each class (at least one) goes to val, and every
    class keeps at least one sample for fitting."""
    rng = np.random.default_rng(seed)
    fit, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        # at least one validation sample per class that has two (few-shot k = 2 still validates)
        n_val = min(max(int(round(len(idx) * val_fraction)), 1), len(idx) - 1)
        val.append(idx[:n_val])
        fit.append(idx[n_val:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(val))
