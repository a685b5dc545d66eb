"""Zero-shot classification: class embeddings from prompt templates, scored against images.

Templates follow CLIP_benchmark: a list of format strings with a `{c}` placeholder
("a photo of a {c}."), a list of callables (classname -> text, as in open_clip), or a mapping
classname -> list of ready-made prompts (per-class prompts, as in CuPL).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from .features import embed_images, embed_texts

Template = str | Callable[[str], str]


def _fill(template: Template, classname: str) -> str:
    if callable(template):
        return template(classname)
    # '{c}' is CLIP_benchmark's placeholder, '{}' lipkit's caption templates'; accept either.
    if "{c}" in template:
        return template.replace("{c}", classname)
    if "{}" in template:
        return template.replace("{}", classname)
    raise ValueError(f"template {template!r} has no '{{c}}' or '{{}}' placeholder for the class name")


def class_prompts(classnames: Sequence[str],
                  templates: Sequence[Template] | Mapping[str, Sequence[str]]) -> list[list[str]]:
    """The prompts of each class, in class order."""
    if not classnames:
        raise ValueError("classnames is empty")
    if isinstance(templates, Mapping):
        missing = [c for c in classnames if not templates.get(c)]
        if missing:
            raise ValueError(f"no prompts for classes {missing[:5]}")
        return [list(templates[c]) for c in classnames]
    if isinstance(templates, str) or not templates:
        raise ValueError("templates must be a non-empty list of templates (not a single string)")
    return [[_fill(t, c) for t in templates] for c in classnames]


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


def _as_labels(labels, n: int, num_classes: int) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape [{n}], got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.long()
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return labels


def classification_metrics(scores: torch.Tensor, labels, topk: Sequence[int] = (1, 5)
                           ) -> dict[str, float]:
    """`acc{k}` for each k in `topk` and `mean_per_class_recall` from scores [N, C].

    acc{k} counts a hit when the label is among the min(k, C) highest scores, so acc5 with
    fewer than 5 classes is well defined. Ties are broken toward the lower class index
    (a stable sort), so results never depend on the backend's topk. Mean per-class recall
    averages top-1 recall over the classes that have at least one sample; classes without
    samples are left out rather than counted as 0 (as sklearn's balanced_accuracy_score).
    """
    scores = torch.as_tensor(scores)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"scores must have shape [N, C] with N, C > 0, got {tuple(scores.shape)}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN (did the model produce NaN embeddings?)")
    if not topk or any(int(k) < 1 for k in topk):
        raise ValueError(f"topk must be positive integers, got {tuple(topk)}")
    n, num_classes = scores.shape
    labels = _as_labels(labels, n, num_classes).to(scores.device)

    kmax = min(max(topk), num_classes)
    ranked = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :kmax]
    hits = ranked == labels[:, None]
    metrics = {f"acc{k}": hits[:, :min(k, num_classes)].any(dim=1).double().mean().item()
               for k in topk}

    correct = hits[:, 0]
    support = torch.bincount(labels, minlength=num_classes)
    recalled = torch.bincount(labels[correct], minlength=num_classes)
    present = support > 0
    metrics["mean_per_class_recall"] = (recalled[present].double() / support[present]).mean().item()
    return metrics


def evaluate(model, tokenize, images: torch.Tensor, labels, classnames: Sequence[str],
             templates: Sequence[Template] | Mapping[str, Sequence[str]], batch_size: int = 64,
             topk: Sequence[int] = (1, 5), *, device=None) -> dict[str, float]:
    """Zero-shot accuracy of `model` on `images` [N, C, H, W] with class `labels` [N].

    Returns {"acc1", "acc5", "mean_per_class_recall"} (one acc{k} per k in `topk`); scores are
    image_embeds @ classifier.T with both sides L2-normalised.
    """
    _as_labels(labels, len(images), len(classnames))  # fail before any model work
    classifier = zeroshot_classifier(model, tokenize, classnames, templates, batch_size,
                                     device=device)
    image_embeds = embed_images(model, images, batch_size, normalize=True, device=device)
    return classification_metrics(image_embeds @ classifier.T, labels, topk)
