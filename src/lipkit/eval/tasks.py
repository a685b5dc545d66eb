"""The seven `lipkit eval` tasks on an `EvalModel` and its `EvalData`.

Each task function takes the shared `Context` (which embeds every image set once and fits the
linear probe once, whichever tasks ask for them) and returns `TaskResult`s: one CLIP_benchmark
record's (dataset, task, metrics), plus details for the report (curves, histograms) that do not
fit the schema's scalar metrics. `skip_reason` says when a task does not apply to a dataset
(no labels, no class names, no captions); the runner then skips it with that line.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from . import collapse, knn, ood, retrieval, text, zeroshot
from .context import Context, note
from .features import embed_texts
from .images import ImageFiles
from .metrics import classification_metrics
from .sources import EvalData, Split

__all__ = ["Context", "TASKS", "TaskResult", "skip_reason"]

RECALL_CURVE_MAX_K = 50


@dataclass
class TaskResult:
    dataset: str
    task: str  # the record's task name (CLIP_benchmark style)
    metrics: dict
    details: dict = field(default_factory=dict)


def run_zeroshot(ctx: Context) -> list[TaskResult]:
    d = ctx.data
    classifier = zeroshot.zeroshot_classifier(ctx.em.model, ctx.em.tokenize, d.class_names,
                                              d.templates, ctx.batch_size)
    metrics = classification_metrics(ctx.embeds("test") @ classifier.T, d.test.labels)
    return [TaskResult(d.name, "zeroshot_classification", metrics)]


def run_linear(ctx: Context) -> list[TaskResult]:
    probe = ctx.probe()
    metrics = probe.evaluate(ctx.features("test"), ctx.data.test.labels)
    metrics.update(best_C=probe.best_C, features=ctx.feature_kind, few_shot_k=ctx.cfg.few_shot_k,
                   train_samples=len(ctx.data.train))
    return [TaskResult(ctx.data.name, "linear_probe", metrics)]


def run_knn(ctx: Context) -> list[TaskResult]:
    c = ctx.cfg
    metrics = knn.evaluate(ctx.features("train"), ctx.data.train.labels, ctx.features("test"),
                           ctx.data.test.labels, k=c.knn_k, temperature=c.knn_temperature,
                           chunk_size=c.chunk_size)
    metrics.update(k=c.knn_k, temperature=c.knn_temperature, features=ctx.feature_kind)
    return [TaskResult(ctx.data.name, "knn_classification", metrics)]


def run_retrieval(ctx: Context) -> list[TaskResult]:
    picked = ctx.data.subset(ctx.split("test"), ctx.cfg.retrieval_limit)
    split, image_embeds = ctx.data.test.take(picked), ctx.embeds("test")[picked]
    texts, text_image = retrieval.flatten_captions(split.captions)
    text_embeds = _embed_distinct(ctx, texts)
    i2t, t2i = retrieval.retrieval_ranks(image_embeds, text_embeds, text_image, texts,
                                         chunk_size=ctx.cfg.chunk_size)
    metrics = retrieval.rank_metrics(i2t, t2i)
    metrics.update(images=len(split), texts=len(texts), distinct_texts=len(set(texts)))
    details = {"text_retrieval_recall_curve": retrieval.recall_curve(i2t, RECALL_CURVE_MAX_K),
               "image_retrieval_recall_curve": retrieval.recall_curve(t2i, RECALL_CURVE_MAX_K)}
    return [TaskResult(ctx.data.name, "zeroshot_retrieval", metrics, details)]


def _corrupt_image(corruption: str, severity: int, seed: int, image: Image.Image,
                   index: int) -> Image.Image:
    return Image.fromarray(ood.corrupt(np.asarray(image)[None], corruption, severity, seed=seed,
                                       first_index=index)[0])


class _Corrupted(Mapping):
    """name -> (images, labels) for each (corruption, severity), built on access; image files
    are corrupted after decoding, in the loader's workers."""

    def __init__(self, ctx: Context, split: Split):
        self.ctx, self.split = ctx, split
        self.keys_ = {ood.shift_name(c, s): (c, s) for c in ctx.cfg.ood_corruptions
                      for s in ctx.cfg.ood_severities}

    def __getitem__(self, name):
        corruption, severity = self.keys_[name]
        images, seed = self.split.images, self.ctx.em.seed
        edit = partial(_corrupt_image, corruption, severity, seed)
        if isinstance(images, np.ndarray):
            images = ood.corrupt(images, corruption, severity, seed=seed)
        elif isinstance(images, ImageFiles):
            images = images.edited(edit)
        else:  # PIL images of different sizes: one at a time
            images = [edit(im, i) for i, im in enumerate(images)]
        return images, self.split.labels

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys_)

    def __len__(self) -> int:
        return len(self.keys_)


def run_ood(ctx: Context) -> list[TaskResult]:
    c, d, em = ctx.cfg, ctx.data, ctx.em
    if c.ood_corruptions:  # none: the shifted datasets alone
        ood.check_corruptions(c.ood_corruptions, c.ood_severities)
    names = d.class_names  # without class names: the probe alone
    common = dict(probe=ctx.probe(), encode=ctx.encode, batch_size=ctx.batch_size)
    prompts = (names, d.templates if names is not None else None)
    results = []
    if c.ood_corruptions:
        split = d.test.take(d.subset(ctx.split("test"), c.ood_limit))
        metrics = ood.evaluate(em.model, em.tokenize, (split.images, split.labels),
                               _Corrupted(ctx, split), *prompts,
                               progress=lambda xs: ctx.bar(xs, "ood: corruptions"), **common)
        metrics.update(images=len(split), features=ctx.feature_kind)
        results.append(TaskResult(f"{d.name}-c", "ood_classification", metrics,
                                  {"corruptions": list(c.ood_corruptions),
                                   "severities": list(c.ood_severities)}))
    if d.style is not None:
        photos, cartoons = d.style
        style = ood.evaluate(em.model, em.tokenize, (photos.images, photos.labels),
                             {"cartoon": (cartoons.images, cartoons.labels)},
                             *prompts, **common)
        style.update(photos=len(photos), cartoons=len(cartoons), features=ctx.feature_kind)
        results.append(TaskResult(f"{d.name}-style", "ood_classification", style))
    if d.shift is not None:  # the whole test split against the whole shifted set
        shifted = ctx.split("shift")
        key = d.shift_name.replace("/", "_")
        shift = ood.evaluate(em.model, em.tokenize, ("test", ctx.split("test").labels),
                             {key: ("shift", shifted.labels)}, *prompts, **common)
        shift.update(images=len(d.test), shifted_images=len(shifted), shift_dataset=d.shift_name,
                     features=ctx.feature_kind)
        results.append(TaskResult(f"{d.name}-shift", "ood_classification", shift))
    return results


def run_text(ctx: Context) -> list[TaskResult]:
    em, c, d = ctx.em, ctx.cfg, ctx.data
    if c.wordsim_path:
        pairs, name = text.read_word_pairs(c.wordsim_path), Path(c.wordsim_path).stem
    else:
        pairs, name = text.read_word_pairs(text.wordsim353_path()), "wordsim353"
    results = [TaskResult(name, "word_similarity", text.wordsim_spearman(
        em.model, em.tokenize, pairs, batch_size=ctx.batch_size))]
    reason = _caption_probe_skip(d)
    if reason:
        note(f"caption probe on {d.name}: skipped, {reason}")
        return results
    pre = c.features == "pre" and em.text_features is not None
    probe = text.caption_probe(em.model, em.tokenize, d.train.caption, d.train.labels,
                               d.test.caption, d.test.labels, batch_size=ctx.batch_size,
                               feature_fn=em.text_features if pre else None, seed=em.seed)
    probe["features"] = "pre" if pre else "post"
    results.append(TaskResult(d.name, "caption_probe", probe))
    return results


def run_collapse(ctx: Context) -> list[TaskResult]:
    em = ctx.em
    if None in (em.image_features, em.image_prototype_head, em.text_prototypes):
        tqdm.write("collapse: skipped, the model has no prototype heads")
        return []
    captions = ctx.data.test.caption
    image_logits = ctx.apply(em.image_prototype_head, ctx.tower("test"))
    text_logits = _embed_distinct(ctx, captions, feature_fn=em.text_prototypes)
    labels = ctx.data.test.labels  # None for an unlabelled set: no NMI, I over log K
    labels = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
    num_classes = 0 if labels is None else len(ctx.data.class_names or []) or int(labels.max()) + 1
    stats = collapse.PrototypeStats(em.num_prototypes, em.prototype_temperature, num_classes)
    for start in range(0, len(captions), ctx.batch_size):
        stop = start + ctx.batch_size
        stats.update(image_logits[start:stop], text_logits[start:stop], None if labels is None else labels[start:stop])
    return [TaskResult(ctx.data.name, "prototype_collapse", stats.metrics(), stats.usage())]


def _embed_distinct(ctx: Context, texts: list[str], feature_fn=None) -> torch.Tensor:
    """Embeddings (or `feature_fn` outputs, unnormalised) of `texts`, each distinct text once."""
    distinct = list(dict.fromkeys(texts))
    where = {t: i for i, t in enumerate(distinct)}
    out = embed_texts(ctx.em.model, ctx.em.tokenize, distinct, ctx.batch_size,
                      normalize=feature_fn is None, feature_fn=feature_fn)
    return out[torch.tensor([where[t] for t in texts])]


TASKS: dict[str, Callable[[Context], list[TaskResult]]] = {
    "zeroshot": run_zeroshot,
    "linear": run_linear,
    "ood": run_ood,
    "retrieval": run_retrieval,
    "knn": run_knn,
    "text": run_text,
    "collapse": run_collapse,
}


def _captions_missing(split: Split) -> str:
    missing = split.missing_captions()
    if not missing:
        return ""
    return "it has no captions" if missing == len(split) else \
        f"{missing} of its {len(split)} images have no caption"


def _caption_probe_skip(d: EvalData) -> str:
    if not d.has_labels:
        return "it has no labels"
    return _captions_missing(d.test) or (_captions_missing(d.train) and
                                         f"its probe training set: {_captions_missing(d.train)}")


def skip_reason(task: str, d: EvalData) -> str:
    """Why `task` does not apply to `d` ("" when it does)."""
    if task in ("zeroshot", "linear", "knn", "ood") and not d.has_labels:
        return "it has no labels"
    if task == "zeroshot" and d.class_names is None:
        return "it has no class names (a classnames.txt beside it, or eval.prompts_path)"
    if task in ("linear", "knn", "ood") and len(np.unique(d.train.labels)) < 2:
        return "its probe training set has fewer than 2 classes"
    if task in ("retrieval", "collapse"):
        return _captions_missing(d.test)
    return ""
