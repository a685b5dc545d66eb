"""The evaluation data each task reads: `open_dataset(spec)` for a built-in name or a path.

An `EvalData` is one dataset as the tasks see it: its record name, class names and zero-shot
templates (or None), a `test` split, a `train` split for the probes (or None), and optional
shifted sets for the OOD task. A `Split` holds images, their class labels (or None), one
caption per image (collapse, caption probe) and all captions of each image (retrieval; None
without captions). Its images are raw: a uint8 array, PIL images, or `ImageFiles` on disk that
are decoded batch by batch when embedded (`images.image_batches`); the model's own
preprocessing turns them into tensors. A tensor is taken as images already preprocessed.

- fashion-mnist: train = the first `linear_train_limit` training images, captioned with the
  run's training templates; test = the 10k test images (`test_limit`), captioned with the
  evaluation templates, which never appear in training. Class names and templates come from
  `fashion_mnist_prompts.json` or `eval.prompts_path`.
- tuxpaint: train = the stamps outside the fixed 200-item hold-out, test = the hold-out; labels
  are the 16 categories; each stamp has its one caption (equal captions on different stamps
  are hits in retrieval). The style shift compares hold-out photos with hold-out cartoons, both
  restricted to the categories that have a cartoon in the hold-out.
- any other spec is a path: class folders, a CSV/TSV/JSONL table or WebDataset shards
  (`layouts`, `user_data`).

With `eval.split: validation` a built-in set's test split is replaced by training data the run
did not train on, for choosing settings: Fashion-MNIST's training images after
`data.train_limit` (the probes train on images before it), Tux Paint's 150 validation stamps
(`data.sources` split `fit` trains on the rest; the probes train on `fit`). Records then name the
data set `NAME:validation`.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lipkit.config import DataConfig, EvalConfig
from lipkit.data.builtins import BUILTIN_SOURCES

from .errors import EvalError
from .images import ImageFiles, Images

PROMPTS_DIR = Path(__file__).with_name("prompts")


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

    @property
    def has_labels(self) -> bool:
        return self.test.labels is not None

    def subset(self, split: Split, n: int) -> np.ndarray:
        """Positions of `n` images of `split` for a task that reads fewer (all for n = 0): the
        first n of a built-in set (they come shuffled), n spread over a set opened by path
        (often ordered by class)."""
        if self.test_split is None or not n or n >= len(split):
            return np.arange(min(n or len(split), len(split)))
        return spread(len(split), n)


def spread(size: int, n: int) -> np.ndarray:
    """`n` <= `size` positions spread evenly over range(size), the first and last included."""
    return np.linspace(0, size - 1, n).round().astype(np.int64)


def load_prompts(path: str | Path) -> tuple[list[str], list[str] | dict[str, list[str]]]:
    """(class_names, templates) from a JSON file with "class_names" (a list of strings) and
    "templates" (format strings with '{}' or '{c}', or a mapping class name -> prompts)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names, templates = data["class_names"], data["templates"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EvalError(f"{path}: not a prompts file with 'class_names' and 'templates' "
                        f"({type(e).__name__}: {e})") from None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise EvalError(f"{path}: 'class_names' must be a non-empty list of strings")
    if isinstance(templates, dict):
        missing = [n for n in names if not templates.get(n)]
        if missing:
            raise EvalError(f"{path}: 'templates' has no prompts for class {missing[0]!r}")
    elif not (isinstance(templates, list) and templates
              and all(isinstance(t, str) and ("{}" in t or "{c}" in t) for t in templates)):
        raise EvalError(f"{path}: 'templates' must be a non-empty list of strings with a '{{}}' "
                        "or '{c}' placeholder, or a mapping class name -> prompts")
    return names, templates


def _prompts(cfg: EvalConfig, default: Path, dataset: str, num_classes: int):
    names, templates = load_prompts(cfg.prompts_path or default)
    if len(names) != num_classes:
        raise EvalError(f"{cfg.prompts_path or default}: {len(names)} class names, but "
                        f"{dataset} has {num_classes} classes")
    return names, templates


def fashion_mnist(cfg: EvalConfig, train_templates: Sequence[str], seed: int = 0, train_limit: int = 0) -> EvalData:
    """`train_limit`: the run's data.train_limit (the validation split starts after it)."""
    from lipkit.data import FashionMNISTPairs, load_fashion_mnist
    from lipkit.data.fashion_mnist import PROMPTS_FILE

    from .zeroshot import class_prompts  # zeroshot reads this module's EvalData

    names, templates = _prompts(cfg, PROMPTS_FILE, "fashion-mnist", 10)
    flat_templates = templates if isinstance(templates, list) else None

    train_images, train_labels = load_fashion_mnist("train")
    held_back = slice(0, None)  # of the test split's images; validation: of the training images
    if cfg.split == "validation":
        if not 0 < train_limit < len(train_labels):
            raise EvalError("eval.split=validation on fashion-mnist reads the training images the run held "
                            f"back, but its data.train_limit is {train_limit}: train with data.train_limit "
                            f"below {len(train_labels)}")
        held_back = slice(train_limit, None)
    n_train = min(cfg.linear_train_limit or len(train_labels), held_back.start or len(train_labels))
    train_pairs = FashionMNISTPairs("train", templates=list(train_templates), seed=seed,
                                    limit=n_train, class_names=names)
    train_caps = [train_pairs.caption(i) for i in range(n_train)]
    train = Split(train_images[:n_train], np.array(train_labels[:n_train]), train_caps,
                  [[c] for c in train_caps])

    test_images, test_labels = load_fashion_mnist("train" if cfg.split == "validation" else "test")
    test_images, test_labels = test_images[held_back], test_labels[held_back]
    n_test = min(cfg.test_limit or len(test_labels), len(test_labels))
    labels = np.array(test_labels[:n_test])
    if flat_templates is not None:
        # test captions: a template chosen per (seed, index) among the evaluation templates
        test_pairs = FashionMNISTPairs("test", templates=[t.replace("{c}", "{}") for t in flat_templates],
                                       seed=seed, class_names=names)
        caption = [test_pairs.caption(i) if cfg.split == "test" else
                   fill_caption(test_pairs, i, int(labels[i])) for i in range(n_test)]
    per_class = class_prompts(names, templates)
    if flat_templates is None:  # per-class prompt lists: the first prompt is the caption
        caption = [per_class[y][0] for y in labels]
    k = cfg.retrieval_captions_per_image
    rng = np.random.default_rng(seed)
    captions = [per_class[y] if not k else [per_class[y][j] for j in
                                            sorted(rng.permutation(len(per_class[y]))[:k])]
                for y in labels]
    test = Split(test_images[:n_test], labels, caption, captions)
    return EvalData(_name("fashion-mnist", cfg), train, test, names, templates)


def fill_caption(pairs, index: int, label: int) -> str:
    """`pairs`' template for `index`, filled with class `label` (images that are not its own)."""
    from lipkit.data.captions import fill, template_index

    return fill(pairs.templates[template_index(pairs.seed, pairs.epoch, index, len(pairs.templates))],
                pairs.class_names[label])


def _name(dataset: str, cfg: EvalConfig) -> str:
    return dataset if cfg.split == "test" else f"{dataset}:{cfg.split}"


def _tuxpaint_split(items) -> Split:
    from lipkit.data.images import open_image

    images = [open_image(it.image) for it in items]
    return Split(images, np.array([it.label for it in items], dtype=np.int64),
                 [it.caption for it in items], [list(it.captions) for it in items])


def tuxpaint(cfg: EvalConfig, seed: int = 0) -> EvalData:
    from lipkit.data.tuxpaint import CATEGORIES, load_tuxpaint, tuxpaint_holdout_split, tuxpaint_validation_split

    names, templates = _prompts(cfg, PROMPTS_DIR / "tuxpaint.json", "tuxpaint", len(CATEGORIES))
    split = tuxpaint_validation_split if cfg.split == "validation" else tuxpaint_holdout_split
    train_items, holdout = split(items=load_tuxpaint())
    if cfg.test_limit:
        holdout = holdout[:cfg.test_limit]
    if cfg.linear_train_limit:
        train_items = train_items[:cfg.linear_train_limit]
    cartoon_categories = {it.category for it in holdout if it.style == "cartoon"}
    photos = [it for it in holdout if it.style == "photo" and it.category in cartoon_categories]
    cartoons = [it for it in holdout if it.style == "cartoon"]
    train, test = _tuxpaint_split(train_items), _tuxpaint_split(holdout)
    by_id = {it.id: i for i, it in enumerate(holdout)}
    style = None
    if photos and cartoons:
        style = (test.take([by_id[it.id] for it in photos]),
                 test.take([by_id[it.id] for it in cartoons]))
    return EvalData(_name("tuxpaint", cfg), train, test, names, templates, style)


BUILTIN_DATASETS = tuple(name for name, s in BUILTIN_SOURCES.items() if s.eval_splits)
# how each built-in evaluation data set is built: (eval settings, the run's data settings, seed)
_BUILT = {
    "fashion-mnist": lambda cfg, data, seed: fashion_mnist(cfg, data.caption_templates, seed, data.train_limit),
    "tuxpaint": lambda cfg, data, seed: tuxpaint(cfg, seed),
}
assert set(_BUILT) == set(BUILTIN_DATASETS), "every built-in with eval splits needs its builder here"


def open_dataset(spec: str, cfg: EvalConfig, data_cfg: DataConfig | None = None,
                 seed: int = 0, divide: bool = True) -> EvalData:
    """A built-in dataset by name, or the labelled images at a path (see `layouts`);
    `data_cfg` gives fashion-mnist's training caption templates. `divide`: a labelled path
    with one split is divided into probe training and test images (else it is all test)."""
    if spec in _BUILT:
        return _BUILT[spec](cfg, data_cfg or DataConfig(), seed)
    from .user_data import open_user_dataset

    try:
        return open_user_dataset(spec, cfg, divide)
    except EvalError as e:
        if str(e) == f"{spec}: no such file or folder":
            raise EvalError(f"{e}, and not a built-in dataset ({', '.join(BUILTIN_DATASETS)})") from None
        raise
