"""The seven `lipkit eval` tasks on an `EvalModel` and its `EvalData`.

Each task function takes the shared `Context` (which embeds every image set once and fits the
linear probe once, whichever tasks ask for them) and returns `TaskResult`s: one CLIP_benchmark
record's (dataset, task, metrics), plus details for the report (curves, histograms) that do not
fit the schema's scalar metrics.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import collapse, knn, linear, ood, retrieval, text, zeroshot
from .features import embed_images, embed_texts, eval_mode, model_device
from .metrics import classification_metrics
from .models import EvalModel
from .sources import EvalData, Split

RECALL_CURVE_MAX_K = 50


@dataclass
class TaskResult:
    dataset: str
    task: str  # the record's task name (CLIP_benchmark style)
    metrics: dict
    details: dict = field(default_factory=dict)


class Context:
    """Caches model inputs, features and the fitted probe across tasks.

    When the model exposes its image tower and head (`image_features`, `image_head`), each image
    set goes through the tower once: the probe/kNN features are the tower output ("pre") and
    the embeddings are the head applied to it. Otherwise `encode_image` gives the embeddings."""

    def __init__(self, em: EvalModel, data: EvalData, progress: bool = True):
        self.em, self.data, self.cfg, self.progress = em, data, em.eval, progress
        self._inputs: dict[str, torch.Tensor] = {}
        self._encoded: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._probe: linear.LinearProbe | None = None
        self._classifier: torch.Tensor | None = None

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

    def inputs(self, name: str) -> torch.Tensor:
        if name not in self._inputs:
            self._inputs[name] = self.em.images(getattr(self.data, name).images)
        return self._inputs[name]

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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

    def apply(self, head, features: torch.Tensor) -> torch.Tensor:
        """`head` over `features` in batches, without grad, on the model's device; float32 CPU."""
        device = model_device(self.em.model)
        with eval_mode(self.em.model):
            return torch.cat([head(f if device is None else f.to(device)).float().cpu()
                              for f in features.split(self.batch_size)])

    def _split_encoded(self, name: str):
        if name not in self._encoded:
            self._encoded[name] = self.encode(self.inputs(name))
        return self._encoded[name]

    def embeds(self, name: str) -> torch.Tensor:
        return self._split_encoded(name)[0]

    def features(self, name: str) -> torch.Tensor:
        return self._split_encoded(name)[1]

    def tower(self, name: str) -> torch.Tensor:
        """Pooled tower features of a split (the probe features when features = pre)."""
        if self.shares_tower and self.feature_kind == "pre":
            return self.features(name)
        return embed_images(self.em.model, self.inputs(name), self.batch_size, normalize=False,
                            feature_fn=self.em.image_features)

    def probe(self) -> linear.LinearProbe:
        if self._probe is None:
            self._probe = linear.fit(self.features("train"), self.data.train.labels,
                                     seed=self.em.seed, few_shot_k=self.cfg.few_shot_k)
        return self._probe

    def bar(self, items, desc: str):
        return tqdm(items, desc=desc, leave=False, disable=not self.progress)


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
    split = ctx.data.test.head(ctx.cfg.retrieval_limit)
    image_embeds = ctx.embeds("test")[:len(split)]
    texts, text_image = retrieval.flatten_captions(split.captions)
    text_embeds = _embed_distinct(ctx, texts)
    i2t, t2i = retrieval.retrieval_ranks(image_embeds, text_embeds, text_image, texts,
                                         chunk_size=ctx.cfg.chunk_size)
    metrics = retrieval.rank_metrics(i2t, t2i)
    metrics.update(images=len(split), texts=len(texts), distinct_texts=len(set(texts)))
    details = {"text_retrieval_recall_curve": retrieval.recall_curve(i2t, RECALL_CURVE_MAX_K),
               "image_retrieval_recall_curve": retrieval.recall_curve(t2i, RECALL_CURVE_MAX_K)}
    return [TaskResult(ctx.data.name, "zeroshot_retrieval", metrics, details)]


class _Corrupted(Mapping):
    """name -> (model inputs, labels) for each (corruption, severity), built on access."""

    def __init__(self, ctx: Context, split: Split):
        self.ctx, self.split = ctx, split
        self.keys_ = {ood.shift_name(c, s): (c, s) for c in ctx.cfg.ood_corruptions
                      for s in ctx.cfg.ood_severities}

    def __getitem__(self, name):
        corruption, severity = self.keys_[name]
        images = self.split.images
        if isinstance(images, np.ndarray):
            raw = ood.corrupt(images, corruption, severity, seed=self.ctx.em.seed)
        else:  # PIL images of different sizes: one at a time
            raw = [ood.corrupt(np.asarray(im)[None], corruption, severity, seed=self.ctx.em.seed,
                               first_index=i)[0] for i, im in enumerate(images)]
            raw = [_pil(a) for a in raw]
        return self.ctx.em.images(raw), self.split.labels

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys_)

    def __len__(self) -> int:
        return len(self.keys_)


def _pil(array: np.ndarray):
    from PIL import Image
    return Image.fromarray(array)


def run_ood(ctx: Context) -> list[TaskResult]:
    c, d, em = ctx.cfg, ctx.data, ctx.em
    ood.check_corruptions(c.ood_corruptions, c.ood_severities)
    common = dict(probe=ctx.probe(), encode=ctx.encode, batch_size=ctx.batch_size)
    split = d.test.head(c.ood_limit)
    clean = (ctx.inputs("test")[:len(split)], split.labels)
    metrics = ood.evaluate(em.model, em.tokenize, clean, _Corrupted(ctx, split), d.class_names,
                           d.templates, progress=lambda xs: ctx.bar(xs, "ood: corruptions"),
                           **common)
    metrics.update(images=len(split), features=ctx.feature_kind)
    results = [TaskResult(f"{d.name}-c", "ood_classification", metrics,
                          {"corruptions": list(c.ood_corruptions),
                           "severities": list(c.ood_severities)})]
    if d.style is not None:
        photos, cartoons = d.style
        style = ood.evaluate(em.model, em.tokenize, (em.images(photos.images), photos.labels),
                             {"cartoon": (em.images(cartoons.images), cartoons.labels)},
                             d.class_names, d.templates, **common)
        style.update(photos=len(photos), cartoons=len(cartoons), features=ctx.feature_kind)
        results.append(TaskResult(f"{d.name}-style", "ood_classification", style))
    return results


def run_text(ctx: Context) -> list[TaskResult]:
    em, c, d = ctx.em, ctx.cfg, ctx.data
    if c.wordsim_path:
        pairs, name = text.read_word_pairs(c.wordsim_path), Path(c.wordsim_path).stem
    else:
        pairs, name = text.read_word_pairs(text.wordsim353_path()), "wordsim353"
    results = [TaskResult(name, "word_similarity", text.wordsim_spearman(
        em.model, em.tokenize, pairs, batch_size=ctx.batch_size))]
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
    labels = torch.as_tensor(ctx.data.test.labels, dtype=torch.long)
    stats = collapse.PrototypeStats(em.num_prototypes, em.prototype_temperature, len(ctx.data.class_names))
    for start in range(0, len(captions), ctx.batch_size):
        stop = start + ctx.batch_size
        stats.update(image_logits[start:stop], text_logits[start:stop], labels[start:stop])
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
