"""Zero-shot classification: class embeddings from prompt templates, scored against images.

`evaluate(model, data)` is the task (`lipkit eval --tasks zeroshot`); `zeroshot_classifier` builds
the class embeddings. Templates follow CLIP_benchmark: a list of format strings with a `{c}`
placeholder ("a photo of a {c}."), a list of callables (classname -> text, as in open_clip), or a
mapping classname -> list of ready-made prompts (per-class prompts, as in CuPL).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from .context import Context
from .features import embed_texts
from .metrics import classification_metrics
from .adapter import EvalModel
from .registry import ZEROSHOT_CLASSIFICATION
from .results import TaskResult
from .splits import EvalData
from .templates import Template, class_prompts

__all__ = ["class_prompts", "classification_metrics", "evaluate", "zeroshot_classifier"]


def zeroshot_classifier(model, tokenize, classnames: Sequence[str],
                        templates: Sequence[Template] | Mapping[str, Sequence[str]],
                        batch_size: int = 256, *, device=None) -> torch.Tensor:
    """Class weights [C, D]: per class, the mean of its L2-normalised prompt embeddings,
    re-normalised (prompts are averaged in embedding space, as in CLIP)."""
    prompts = class_prompts(classnames, templates)
    flat = [p for class_list in prompts for p in class_list]
    embeds = embed_texts(model, tokenize, flat, batch_size, normalize=True, device=device)
    per_class = torch.split(embeds, [len(p) for p in prompts])
    return F.normalize(torch.stack([e.mean(dim=0) for e in per_class]), dim=-1)


def evaluate(model: EvalModel, data: EvalData, *, cache: Context | None = None, **settings
             ) -> list[TaskResult]:
    """Zero-shot classification of `data`'s whole test split by its class names and templates:
    one zeroshot_classification result, {"acc1", "acc5" (with more than 5 classes),
    "mean_per_class_recall", "images"}; the scores are image_embeds @ classifier.T, both sides
    L2-normalised. Needs labels and two class names or more."""
    ctx = Context.of(model, data, cache, settings)
    ctx.require("zeroshot", labels=True, class_names=True)
    em, d = ctx.em, ctx.data
    classifier = zeroshot_classifier(em.model, em.tokenize, d.class_names, d.templates, ctx.batch_size)
    test = ctx.split("test")
    metrics = classification_metrics(ctx.embeds("test") @ classifier.T, test.labels, ctx.topk("zeroshot"))
    metrics["images"] = len(test)
    return [TaskResult(d.name, ZEROSHOT_CLASSIFICATION, metrics)]
