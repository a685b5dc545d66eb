"""Fashion-MNIST: fetch (Debian package `dataset-fashion-mnist`), parse, and serve as
image-caption pairs with templated captions."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .cache import DataSourceError, cache_dir
from .captions import caption_class, check_templates, fill, template_index
from .debian import fetch_from_debian
from .idx import read_idx

MEAN = 0.2860
STD = 0.3530
NUM_CLASSES = 10
PACKAGE = "dataset-fashion-mnist"
_PACKAGE_DIR = "usr/share/datasets/fashion-mnist"
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
FILES = [f"{p}-{kind}-ubyte.gz" for p in SPLIT_PREFIX.values() for kind in ("images-idx3", "labels-idx1")]
PROMPTS_FILE = Path(__file__).with_name("fashion_mnist_prompts.json")

_loaded: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def data_dir() -> Path:
    return cache_dir() / "fashion-mnist"


def _manual_instructions(dest: Path) -> str:
    return (
        f"Provide Fashion-MNIST by hand: put the four IDX files {', '.join(FILES)} into {dest} "
        "(official copies: https://github.com/zalandoresearch/fashion-mnist, folder data/fashion; "
        f"or the Debian package '{PACKAGE}', under /{_PACKAGE_DIR}/). "
        "Set LIPKIT_CACHE to use another cache directory."
    )


def ensure_files() -> Path:
    """The directory holding the four IDX files, fetching the missing ones from Debian."""
    dest = data_dir()
    missing = [f for f in FILES if not (dest / f).is_file()]
    if missing:
        try:
            fetch_from_debian(PACKAGE, {f: f"{_PACKAGE_DIR}/{f}" for f in missing}, dest)
        except (DataSourceError, OSError) as e:
            raise DataSourceError(
                f"Fashion-MNIST is not in {dest} and could not be fetched ({e}). {_manual_instructions(dest)}"
            ) from None
    return dest


def _check_split(split: str) -> None:
    if split not in SPLIT_PREFIX:
        raise ValueError(f"Fashion-MNIST split must be one of {sorted(SPLIT_PREFIX)}, got {split!r}")


def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Raw split: images uint8 [N, 28, 28], labels int64 [N]. Parsed once per process; the arrays
    are shared, hence read-only."""
    _check_split(split)
    dest = ensure_files()
    key = (str(dest), split)
    if key not in _loaded:
        prefix = SPLIT_PREFIX[split]
        image_file = dest / f"{prefix}-images-idx3-ubyte.gz"
        label_file = dest / f"{prefix}-labels-idx1-ubyte.gz"
        images = read_idx(image_file, ndim=3)
        labels_u8 = read_idx(label_file, ndim=1)
        if images.shape[1:] != (28, 28):
            raise DataSourceError(f"{image_file}: images are {images.shape[1:]}, expected (28, 28)")
        if len(images) != len(labels_u8):
            raise DataSourceError(f"{dest}: {split} split has {len(images)} images but {len(labels_u8)} labels")
        if labels_u8.size and labels_u8.max() >= NUM_CLASSES:
            raise DataSourceError(f"{label_file}: label {labels_u8.max()} out of range 0-{NUM_CLASSES - 1}")
        labels = labels_u8.astype(np.int64)
        labels.flags.writeable = False  # frombuffer arrays (images) are read-only already
        _loaded[key] = (images, labels)
    return _loaded[key]


def normalize(images_u8: np.ndarray) -> torch.Tensor:
    """uint8 [..., 28, 28] -> float32 (x/255 - MEAN)/STD with a channel axis: [..., 1, 28, 28]."""
    x = (images_u8.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x).unsqueeze(-3)


@dataclass(frozen=True)
class Prompts:
    labels: list[str]  # official class names, for display
    class_names: list[str]  # natural names used inside captions
    templates: list[str]  # evaluation templates (disjoint from the training ones)


def fashion_mnist_prompts(path: str | Path | None = None) -> Prompts:
    """Class names and evaluation templates from `fashion_mnist_prompts.json` (or your own file
    with the same keys)."""
    path = Path(path) if path is not None else PROMPTS_FILE
    try:
        data = json.loads(path.read_text())
        labels, names, templates = data["labels"], data["class_names"], data["templates"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataSourceError(
            f"{path}: not a prompts file with 'labels', 'class_names', 'templates' ({e})"
        ) from None
    for key, value in (("labels", labels), ("class_names", names)):
        if not (isinstance(value, list) and len(value) == NUM_CLASSES and all(isinstance(v, str) for v in value)):
            raise DataSourceError(f"{path}: '{key}' must be a list of {NUM_CLASSES} strings")
    try:
        templates = check_templates(templates, f"{path}: 'templates'")
    except ValueError as e:
        raise DataSourceError(str(e)) from None
    return Prompts(labels=labels, class_names=names, templates=templates)


class FashionMNISTPairs(Dataset):
    """Items `{"image": FloatTensor[1, 28, 28], "caption": str, "label": int, "index": int}`.

    The caption is a template with its '{}' replaced by the class name, the template picked by hashing
    (seed, epoch, index): reproducible, and fresh each epoch after `set_epoch(e)`. With
    `caption_noise` a share of the captions name another class (loosely paired data). With DataLoader
    workers, call `set_epoch` before iterating (non-persistent workers copy the dataset per epoch).
    """

    def __init__(
        self,
        split: str = "train",
        templates: Sequence[str] | None = None,
        seed: int = 0,
        limit: int = 0,
        class_names: Sequence[str] | None = None,
        caption_noise: float = 0.0,
    ):
        _check_split(split)
        if limit < 0:
            raise ValueError(f"limit must be >= 0 (0 = all), got {limit}")
        if not 0 <= caption_noise <= 1:
            raise ValueError(f"caption_noise must lie in [0, 1], got {caption_noise}")
        self.caption_noise = caption_noise
        prompts = None if templates is not None and class_names is not None else fashion_mnist_prompts()
        self.templates = check_templates(templates if templates is not None else prompts.templates)
        self.class_names = list(class_names if class_names is not None else prompts.class_names)
        if len(self.class_names) != NUM_CLASSES:
            raise ValueError(f"need {NUM_CLASSES} class names, got {len(self.class_names)}")
        images, labels = load_fashion_mnist(split)
        n = len(images) if limit == 0 else min(limit, len(images))
        self.split, self.seed, self.epoch = split, seed, 0
        self._images, self._labels = images[:n], labels[:n]
        self.augment = None  # a lipkit.data.augment.TrainingAugment: extra views, caption augmentation

    # Items draw from no random generator (templates are chosen by a hash of seed, epoch and
    # index), so a loader need not seed the generators per item.
    item_rng = False

    def __len__(self) -> int:
        return len(self._labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """The items at `indices`, normalised in one pass (a DataLoader batch)."""
        for index in indices:
            if not -len(self) <= index < len(self):
                raise IndexError(f"index {index} out of range for {len(self)} items")
        idx = [index % len(self) for index in indices]
        images = normalize(self._images[idx])
        items = [{"image": images[j], "caption": self.caption(i), "label": int(self._labels[i]), "index": i}
                 for j, i in enumerate(idx)]
        if self.augment is not None:  # extra views from the uint8 image, as PIL sees it
            for item, i in zip(items, idx):
                self.augment.apply(item, Image.fromarray(self._images[i], mode="L"), self.epoch, i)
        return items

    def caption(self, index: int) -> str:
        """A template filled with the item's class name, or, for a share `caption_noise` of the
        items (drawn anew each epoch), with another class's name."""
        label = caption_class(self.seed, self.epoch, index, int(self._labels[index]), range(NUM_CLASSES),
                              self.caption_noise)
        t = self.templates[template_index(self.seed, self.epoch, index, len(self.templates))]
        return fill(t, self.class_names[label])

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        return self.__getitems__([index])[0]

    @property
    def labels(self) -> torch.Tensor:
        """All labels, LongTensor [N]."""
        return torch.tensor(self._labels, dtype=torch.long)

    def images_tensor(self) -> torch.Tensor:
        """The whole (limited) split normalised, FloatTensor [N, 1, 28, 28]; built on each call."""
        return normalize(self._images)

    def possible_captions(self) -> list[str]:
        """Every caption this dataset can produce (templates x class names), e.g. a tokenizer corpus."""
        return [fill(t, name) for t in self.templates for name in self.class_names]
