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

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lipkit.config import DataConfig, EvalConfig
from lipkit.data.builtins import BUILTIN_SOURCES

from .errors import EvalError
from .splits import EvalData, Split, limit_of
from .templates import class_prompts, load_prompts
from .user_data import open_user_dataset

PROMPTS_DIR = Path(__file__).with_name("prompts")


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
    n_train = min(limit_of(cfg, "linear_train_limit", by_path=False) or len(train_labels),
                  held_back.start or len(train_labels))
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
    n_train = limit_of(cfg, "linear_train_limit", by_path=False)
    if n_train:
        train_items = train_items[:n_train]
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

    try:
        return open_user_dataset(spec, cfg, divide)
    except EvalError as e:
        if str(e) == f"{spec}: no such file or folder":
            raise EvalError(f"{e}, and not a built-in dataset ({', '.join(BUILTIN_DATASETS)})") from None
        raise
