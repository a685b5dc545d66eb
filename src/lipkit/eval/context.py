"""What the tasks on one dataset share: each image set embedded once, the probe fitted once.

Every task's `evaluate(model, data, *, cache=None, **settings)` runs in a `Context`
(`Context.of`): the `cache` `lipkit eval` passes to all the tasks on one dataset, or a new one.
`Context.split(name)` embeds a split of the `EvalData` ("train", "test", "shift") the first
time it is asked for, batch by batch (`images.image_batches`), and keeps only the embeddings
and probe features. "probe_test" is what the probes score: the test split, or, when the data
asks the probes to divide its test split (`probe_division`), the part of it they do not train
on; both parts are rows of the embedded test split, divided after its unreadable images are
dropped. Images that cannot be read are dropped from the split then, and counted
in `data.skipped`, so every task after that sees the same images. `prepare(tasks)` does this
up front for the splits the tasks read. An embedding `store` passed to several contexts
(several datasets evaluated with one model) embeds a split shared by them, e.g. the probes'
training set of `--dataset-train`, once. `once(fn)` keeps what tasks share beyond embeddings
(the fitted linear probe).
"""
from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lipkit.config import EvalConfig
from lipkit.progress import progress_bar

from .errors import EvalError, TaskSkipped
from .features import FeatureFn, embed_images, embed_texts, eval_mode, model_device
from .images import ImageFiles, Images, batch_count, image_batches
from .adapter import EvalModel
from .registry import TASKS
from .splits import DIVISION_SEED, EvalData, Split, stratified_split

SHOWN_SKIPS = 20
T = TypeVar("T")
NO_PROBE_TRAIN = ("it has no train split for the probes (give --dataset-train, or divide its test split "
                  "with eval.probe_train_fraction=0.5)")


def note(text: str) -> None:
    """One line for the user, on stderr, without breaking progress bars."""
    tqdm.write(text, file=sys.stderr)


def probe_shortfall(labels, few_shot_k: int | None = None) -> str:
    """Why a probe cannot be trained on `labels`, or "": fewer than 2 classes, or (when choosing
    its C, after keeping `few_shot_k` images a class) no class with an image to hold out."""
    counts = np.unique(np.asarray(labels), return_counts=True)[1]
    if len(counts) < 2:
        return "its probe training set has fewer than 2 classes"
    if few_shot_k is not None:
        if few_shot_k:
            counts = np.minimum(counts, few_shot_k)
        if counts.max() < 2:
            return ("its probe training set has one image per class"
                    + (f" (eval.few_shot_k={few_shot_k})" if few_shot_k else "")
                    + ", none to hold out for choosing the probe's C")
    return ""


def captions_missing(split: Split) -> str:
    """Why `split` cannot be captioned per image ("" when every image has a caption)."""
    missing = split.missing_captions()
    if not missing:
        return ""
    return "it has no captions" if missing == len(split) else \
        f"{missing} of its {len(split)} images have no caption"


@dataclass
class Encoded:
    kept: np.ndarray | None  # positions of the readable images (None: all were)
    embeds: torch.Tensor  # unit embeddings
    features: torch.Tensor  # probe / kNN features
    skipped: list[tuple[str, str]]


class Context:
    """Caches features and the fitted probe across tasks.

    When the model exposes its image tower and head (`image_features`, `image_head`), each image
    set goes through the tower once: the probe/kNN features are the tower output ("pre") and
    the embeddings are the head applied to it. Otherwise `encode_image` gives the embeddings."""

    def __init__(self, em: EvalModel, data: EvalData, progress: bool = True,
                 store: dict[str, Encoded] | None = None):
        self.em, self.data, self.cfg, self.progress = em, data, em.eval, progress
        self.store = {} if store is None else store
        self._encoded: dict[str, Encoded] = {}
        self._once: dict[Callable, object] = {}

    @classmethod
    def of(cls, model: EvalModel, data: EvalData, cache: Context | None = None,
           settings: Mapping[str, object] | None = None) -> Context:
        """The context a task runs in: `cache` (it must be of this model and data), or a new one,
        without progress bars, whose eval config is the model's with `settings` changed."""
        if cache is not None:
            if cache.em is not model or cache.data is not data or settings:
                raise EvalError("cache: give the Context of this model and dataset, and no settings "
                                "(the cache's model holds them)")
            return cache
        unknown = sorted(set(settings or {}) - {f.name for f in dataclasses.fields(EvalConfig)})
        if unknown:
            raise EvalError(f"unknown eval setting(s) {', '.join(unknown)}; settings are eval.* config fields")
        if settings:
            model = dataclasses.replace(model, eval=dataclasses.replace(model.eval, **settings))
        return cls(model, data, progress=False)

    def require(self, task: str, *, labels: bool = False, class_names: bool = False,
                probe_classes: bool = False, choose_C: bool = False, captions: bool = False) -> None:
        """TaskSkipped when the data lacks what `task` needs: labels, class names, two or more
        classes in the probes' training set (`choose_C`: and a class with two images after
        eval.few_shot_k, to hold one out for choosing the probe's C), a caption for every test image."""
        d = self.data
        reason = ""
        if labels and not d.has_labels:
            reason = "it has no labels"
        elif class_names and d.class_names is None:
            reason = "it has no class names (a classnames.txt beside it, or eval.prompts_path)"
        elif class_names and len(d.class_names) < 2:
            reason = f"it has one class ({d.class_names[0]!r}): every image would be right"
        elif probe_classes or choose_C:
            reason = self.probe_shortfall(self.cfg.few_shot_k if choose_C else None)
        if not reason and captions:
            reason = captions_missing(d.test)
        if reason:
            raise TaskSkipped(task, d.name, reason)

    def probe_shortfall(self, few_shot_k: int | None = None) -> str:
        """Why the probes cannot run on the data ("" when they can): no training images, too few
        classes or images in them, no images left for them to score."""
        train = self.probe_train()
        if train is None:
            return NO_PROBE_TRAIN
        reason = probe_shortfall(train.labels, few_shot_k)
        if not reason and not len(self.split("probe_test")):
            reason = ("its test split has one image per class, none left for the probes to score "
                      "once eval.probe_train_fraction of it trains them")
        return reason

    @property
    def num_classes(self) -> int:
        """The classes a classifier of the data chooses among: its class names, else the labels'."""
        d = self.data
        if d.class_names is not None:
            return len(d.class_names)
        return 1 + max(int(s.labels.max()) for s in (d.test, d.train) if s is not None and len(s))

    def topk(self, task: str) -> tuple[int, ...]:
        """The top-k accuracies worth reporting: (1, 5), or (1,) with 5 classes or fewer, where
        every label is in the top 5 (left out, in one line)."""
        if self.num_classes > 5:
            return (1, 5)
        note(f"{task} on {self.data.name}: acc5 left out, with {self.num_classes} classes every "
             "label is in the top 5")
        return (1,)

    def probe_train(self) -> Split | None:
        """The probes' training images (None: the data has none), its test split divided first
        when the data asks for that."""
        return self.split("train") if self.data.probe_division else self.data.train

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size

    @property
    def shares_tower(self) -> bool:
        return self.em.image_features is not None and self.em.image_head is not None

    @property
    def feature_kind(self) -> str:
        """"pre" (pooled tower features) when asked for and the model exposes them, else "post"."""
        return "pre" if self.cfg.features == "pre" and self.em.image_features is not None else "post"

    @property
    def feature_fn(self):
        return self.em.image_features if self.feature_kind == "pre" else None

    def _encode_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(unit embeddings, probe/kNN features) of model-ready images."""
        em, b = self.em, self.batch_size
        if not self.shares_tower:
            embeds = embed_images(em.model, images, b, normalize=True)
            if self.feature_kind == "post":
                return embeds, embeds
            return embeds, embed_images(em.model, images, b, normalize=False,
                                        feature_fn=em.image_features)
        tower = embed_images(em.model, images, b, normalize=False, feature_fn=em.image_features)
        embeds = F.normalize(self.apply(em.image_head, tower), dim=-1)
        return embeds, (tower if self.feature_kind == "pre" else embeds)

    def _map(self, images: Images, fn: Callable, desc: str):
        """(the outputs of `fn` over the batches, row by row, positions of the images used,
        unreadable images). `fn` returns a tuple of [batch, D] tensors; the outputs are filled
        in place, so a set's embeddings are never held twice."""
        outputs, filled, kept, skipped = None, 0, [], []
        batches = image_batches(images, self.em.images, self.em.preprocess, self.batch_size,
                                self.cfg.num_workers)
        for batch in progress_bar(batches, desc=desc, total=batch_count(images, self.batch_size),
                          leave=False, disable=not self.progress):
            skipped += batch.skipped
            if batch.images is None:
                continue
            parts = fn(batch.images)
            if outputs is None:
                outputs = [torch.empty(len(images), p.shape[1], dtype=p.dtype) for p in parts]
            for out, part in zip(outputs, parts):
                out[filled:filled + len(part)] = part
            filled += len(batch.indices)
            kept.append(batch.indices)
        if outputs is None:
            raise EvalError(f"{self.data.name}: none of its {len(images)} images can be read; "
                            f"e.g. {skipped[0][0]}: {skipped[0][1]}")
        return [out[:filled] for out in outputs], np.concatenate(kept), skipped

    def encode(self, images: Images | str | tuple[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """(unit embeddings, probe/kNN features) of raw images (any `image_batches` input), of a
        split of the data when `images` is its name, or of some of its rows, (name, positions),
        from the embeddings already made."""
        if isinstance(images, str):
            return self.embeds(images), self.features(images)
        if isinstance(images, tuple):
            name, rows = images
            return self.embeds(name)[rows], self.features(name)[rows]
        (embeds, features), _, skipped = self._map(images, self._encode_batch, "embed")
        if skipped:  # the split these images come from was read in full before
            raise EvalError(f"{skipped[0][0]}: {skipped[0][1]} (it could be read earlier)")
        return embeds, features

    def apply(self, head, features: torch.Tensor) -> torch.Tensor:
        """`head` over `features` in batches, without grad, on the model's device; float32 CPU."""
        device = model_device(self.em.model)
        with eval_mode(self.em.model):
            return torch.cat([head(f if device is None else f.to(device)).float().cpu()
                              for f in features.split(self.batch_size)])

    def _divide(self) -> None:
        """The probes' training and test images as rows of the embedded test split."""
        test, d = self._encoded_split("test"), self.data
        train_rows, test_rows = stratified_split(d.test.labels, 1 - d.probe_division, DIVISION_SEED)
        d.train, d.probe_test = d.test.take(train_rows), d.test.take(test_rows)
        for name, rows in (("train", train_rows), ("probe_test", test_rows)):
            self._encoded[name] = Encoded(None, test.embeds[rows], test.features[rows], [])

    def _encoded_split(self, name: str) -> Encoded:
        if name not in self._encoded and self.data.probe_division and name in ("train", "probe_test"):
            self._divide()
        elif name == "probe_test" and name not in self._encoded:  # the probes score the test split
            self._encoded[name] = self._encoded_split("test")
        if name not in self._encoded:
            split: Split = getattr(self.data, name)
            done = self.store.get(split.key) if split.key else None
            if done is None:
                (embeds, features), kept, skipped = self._map(split.images, self._encode_batch,
                                                              f"embed {self.data.name} {name}")
                done = Encoded(kept if skipped else None, embeds, features, skipped)
                self._report(name, (self.data.skipped or {}).get(name, []) + skipped)
                if split.key:
                    self.store[split.key] = done
            if done.kept is not None:
                setattr(self.data, name, split.take(done.kept, split.key))
            if self.data.skipped is not None:
                self.data.skipped.setdefault(name, []).extend(done.skipped)
            self._encoded[name] = done
        return self._encoded[name]

    def _report(self, name: str, skipped: list[tuple[str, str]]) -> None:
        for where, reason in skipped[:SHOWN_SKIPS]:
            note(f"skipped {where}: {reason}")
        if len(skipped) > SHOWN_SKIPS:
            note(f"skipped {len(skipped) - SHOWN_SKIPS} more unusable samples of "
                 f"{self.data.name} {name}")

    def split(self, name: str) -> Split:
        """The split, embedded (its unreadable images dropped)."""
        self._encoded_split(name)
        if name == "probe_test" and self.data.probe_test is None:
            return self.data.test
        return getattr(self.data, name)

    def embeds(self, name: str) -> torch.Tensor:
        return self._encoded_split(name).embeds

    def features(self, name: str) -> torch.Tensor:
        return self._encoded_split(name).features

    def tower(self, name: str) -> torch.Tensor:
        """Pooled tower features of a split (the probe features when features = pre)."""
        if self.shares_tower and self.feature_kind == "pre":
            return self.features(name)
        (tower,), _, _ = self._map(self.split(name).images, lambda x: (embed_images(
            self.em.model, x, self.batch_size, normalize=False, feature_fn=self.em.image_features),),
            f"tower {self.data.name} {name}")
        return tower

    def embed_texts(self, texts: list[str], feature_fn: FeatureFn | None = None) -> torch.Tensor:
        """Embeddings (or `feature_fn` outputs, unnormalised) of `texts`, each distinct text once."""
        distinct = list(dict.fromkeys(texts))
        where = {t: i for i, t in enumerate(distinct)}
        out = embed_texts(self.em.model, self.em.tokenize, distinct, self.batch_size,
                          normalize=feature_fn is None, feature_fn=feature_fn)
        return out[torch.tensor([where[t] for t in texts])]

    def prepare(self, tasks: Sequence[str]) -> None:
        """Embed the image files of the splits the tasks read, before any task looks at them."""
        start, images = time.perf_counter(), 0
        for name in dict.fromkeys(s for t in tasks for s in TASKS[t].image_splits):
            split = getattr(self.data, name)
            if split is not None and isinstance(split.images, ImageFiles):
                images += len(self.split(name))
        if images and self.progress:
            note(f"{self.data.name}: {images} images embedded in {time.perf_counter() - start:.0f} s")

    def once(self, fn: Callable[[Context], T]) -> T:
        """fn(self), computed on the first call only (what several tasks share, e.g. a fitted probe)."""
        if fn not in self._once:
            self._once[fn] = fn(self)
        return self._once[fn]

    def bar(self, items, desc: str):
        return progress_bar(items, desc=desc, leave=False, disable=not self.progress)
