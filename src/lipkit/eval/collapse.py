"""Prototype collapse diagnostics over a whole dataset (for nCLIP / xCLIP models).

From paired image and text prototype logits [N, K] (the nCLIP heads' cosines), with
p_i = softmax(logits_i / temperature):

- usage entropy: H(p̄) / log K, p̄ the mean of p_i over the dataset. 1 = every prototype used
  equally; 0 = one prototype takes all the mass (collapse to a single prototype);
- argmax usage: how many distinct prototypes are some sample's argmax, and the entropy of that
  histogram / log K;
- per-sample entropy: mean H(p_i) / log K. Near 1 = uniform, undecided outputs (the other
  collapse); near 0 = confident assignments. Also the mean max probability;
- image/text argmax agreement: the share of pairs whose image and text pick the same prototype
  (read it with the mutual information: a constant output agrees 100%);
- mutual information between input and prototype, I = H(p̄) − mean H(p_i), divided by
  log min(K, C) with C classes (log K without labels): 0 for any input-independent output,
  whether one prototype or uniform (H(p̄)/log K alone cannot see the second: a constant soft
  output scores high on it), 1 for confident assignments that spread over min(K, C) prototypes
  (above 1 when confident assignments spread over more prototypes than classes: over-clustering;
  the NMI below tells whether they follow the classes);
- with labels, the normalised mutual information between argmax prototype and class
  (sklearn's `normalized_mutual_info_score`, arithmetic mean): 1 when prototypes and classes
  match one to one (whatever the prototype numbering), 0 when the argmax says nothing of the class.

Everything accumulates chunk by chunk (`PrototypeStats.update`), so a dataset of any size is
one pass. Argmax ties go to the lower prototype index. `evaluate(model, data)` is the task;
`prototype_stats` the same on prototype logits you already have.
"""
from __future__ import annotations

import math

import torch

from .context import Context
from .errors import TaskSkipped
from .adapter import EvalModel
from .registry import PROTOTYPE_COLLAPSE
from .results import TaskResult
from .splits import EvalData


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy along the last axis, with 0 log 0 = 0."""
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(dim=-1)


def _first_argmax(x: torch.Tensor) -> torch.Tensor:
    # torch.argmax does not promise the first of equal maxima on every backend; this does.
    is_max = x == x.max(dim=1, keepdim=True).values
    index = torch.arange(x.shape[1]).expand_as(x)
    return torch.where(is_max, index, x.shape[1]).min(dim=1).values


def normalized_mutual_information(contingency: torch.Tensor) -> float:
    """NMI of two labelings from their contingency table [A, B] of counts: I / mean(H_a, H_b),
    as sklearn's `normalized_mutual_info_score` (1 when both labelings have a single value)."""
    joint = contingency.double() / contingency.sum()
    pa, pb = joint.sum(1), joint.sum(0)
    if (pa > 0).sum() <= 1 and (pb > 0).sum() <= 1:
        return 1.0
    h_a, h_b = _entropy(pa).item(), _entropy(pb).item()
    mi = max(0.0, (h_a + h_b - _entropy(joint.flatten()).item()))
    return mi / ((h_a + h_b) / 2) if h_a + h_b > 0 else 0.0


class _Side:
    def __init__(self, k: int, num_classes: int):
        self.prob_sum = torch.zeros(k, dtype=torch.float64)
        self.entropy_sum = 0.0
        self.max_prob_sum = 0.0
        self.argmax_counts = torch.zeros(k, dtype=torch.long)
        self.by_class = torch.zeros(k, num_classes, dtype=torch.long)  # argmax prototype x class

    def update(self, logits: torch.Tensor, temperature: float, labels: torch.Tensor | None) -> torch.Tensor:
        p = torch.softmax(logits.double() / temperature, dim=-1)
        self.prob_sum += p.sum(dim=0)
        self.entropy_sum += _entropy(p).sum().item()
        self.max_prob_sum += p.max(dim=-1).values.sum().item()
        top = _first_argmax(logits.double())
        self.argmax_counts += torch.bincount(top, minlength=p.shape[1])
        if labels is not None:
            c = self.by_class.shape[1]
            self.by_class += torch.bincount(top * c + labels, minlength=p.shape[1] * c).view(-1, c)
        return top

    def metrics(self, prefix: str, n: int, num_classes: int) -> dict[str, float]:
        k = len(self.prob_sum)
        log_k = math.log(k)
        counts = self.argmax_counts.double()
        usage_entropy = _entropy(self.prob_sum / n).item()
        out = {
            f"{prefix}_usage_entropy_ratio": usage_entropy / log_k,
            f"{prefix}_argmax_entropy_ratio": _entropy(counts / n).item() / log_k,
            f"{prefix}_distinct_prototypes": int((self.argmax_counts > 0).sum()),
            f"{prefix}_sample_entropy_ratio": self.entropy_sum / n / log_k,
            f"{prefix}_mean_max_prob": self.max_prob_sum / n,
            f"{prefix}_mutual_information_ratio":
                (usage_entropy - self.entropy_sum / n) / math.log(min(k, num_classes) if num_classes > 1 else k),
        }
        if num_classes:
            out[f"{prefix}_label_nmi"] = normalized_mutual_information(self.by_class)
        return out


class PrototypeStats:
    """Accumulates the diagnostics over chunks of paired (image, text) prototype logits, and of
    their class labels when `num_classes` is given."""

    def __init__(self, num_prototypes: int, temperature: float = 0.1, num_classes: int = 0):
        if num_prototypes < 2:
            raise ValueError(f"need at least 2 prototypes, got {num_prototypes}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = no labels), got {num_classes}")
        self.k, self.temperature, self.n, self.agree = num_prototypes, temperature, 0, 0
        self.num_classes = num_classes
        self.image, self.text = _Side(num_prototypes, num_classes), _Side(num_prototypes, num_classes)

    def update(self, image_logits: torch.Tensor, text_logits: torch.Tensor,
               labels: torch.Tensor | None = None) -> None:
        if image_logits.shape != text_logits.shape or image_logits.ndim != 2:
            raise ValueError(f"image and text logits must both be [N, {self.k}], got "
                             f"{tuple(image_logits.shape)} and {tuple(text_logits.shape)}")
        if image_logits.shape[1] != self.k:
            raise ValueError(f"expected {self.k} prototypes, got logits of width "
                             f"{image_logits.shape[1]}")
        if not (torch.isfinite(image_logits).all() and torch.isfinite(text_logits).all()):
            raise ValueError("prototype logits contain NaN or inf")
        if (labels is None) != (self.num_classes == 0):
            raise ValueError("labels must be given with every update when num_classes is set, and only then")
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long).cpu()
            if labels.shape != (image_logits.shape[0],):
                raise ValueError(f"expected {image_logits.shape[0]} labels, got shape {tuple(labels.shape)}")
            if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < self.num_classes):
                raise ValueError(f"labels must lie in [0, {self.num_classes}), got {int(labels.min())}..{int(labels.max())}")
        image_top = self.image.update(image_logits.cpu(), self.temperature, labels)
        text_top = self.text.update(text_logits.cpu(), self.temperature, labels)
        self.agree += int((image_top == text_top).sum())
        self.n += image_logits.shape[0]

    def metrics(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no samples: call update() before metrics()")
        out = {"num_prototypes": self.k, "temperature": self.temperature}
        if self.num_classes:
            out["num_classes"] = self.num_classes
        out.update(self.image.metrics("image", self.n, self.num_classes))
        out.update(self.text.metrics("text", self.n, self.num_classes))
        out["argmax_agreement"] = self.agree / self.n
        return out

    def usage(self) -> dict[str, list[int]]:
        """Argmax count per prototype, per modality (for the report's histogram)."""
        return {"image_argmax_counts": self.image.argmax_counts.tolist(),
                "text_argmax_counts": self.text.argmax_counts.tolist()}


def prototype_stats(image_logits: torch.Tensor, text_logits: torch.Tensor, *, temperature: float = 0.1,
                    labels=None, num_classes: int = 0, num_prototypes: int = 0, chunk_size: int = 4096
                    ) -> PrototypeStats:
    """The diagnostics of paired prototype logits [N, K] (`.metrics()`, `.usage()`); `labels` [N]
    in [0, num_classes) add the label NMI (num_classes 0: the largest label + 1). A ValueError
    when K is not `num_prototypes` (0: any K)."""
    image_logits, text_logits = torch.as_tensor(image_logits), torch.as_tensor(text_logits)
    if image_logits.ndim != 2 or image_logits.shape[0] == 0:
        raise ValueError(f"image_logits must be [N, K] with N > 0, got {tuple(image_logits.shape)}")
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long)
        num_classes = num_classes or int(labels.max()) + 1
    stats = PrototypeStats(num_prototypes or image_logits.shape[1], temperature,
                           num_classes if labels is not None else 0)
    for start in range(0, image_logits.shape[0], chunk_size):
        stop = start + chunk_size
        stats.update(image_logits[start:stop], text_logits[start:stop],
                     None if labels is None else labels[start:stop])
    return stats


def evaluate(model: EvalModel, data: EvalData, *, cache: Context | None = None, **settings
             ) -> list[TaskResult]:
    """The diagnostics over `data`'s test images and one caption of each, for a model with
    prototype heads: one prototype_collapse result (the module docstring lists its metrics; the
    label NMI when the data has labels); details: the argmax count of each prototype. Needs a
    caption for every image."""
    ctx = Context.of(model, data, cache, settings)
    ctx.require("collapse", captions=True)
    em, d = ctx.em, ctx.data
    if None in (em.image_features, em.image_prototype_head, em.text_prototypes):
        raise TaskSkipped("collapse", d.name, "the model has no prototype heads")
    image_logits = ctx.apply(em.image_prototype_head, ctx.tower("test"))
    text_logits = ctx.embed_texts(ctx.split("test").caption, feature_fn=em.text_prototypes)  # of the readable images
    stats = prototype_stats(image_logits, text_logits, temperature=em.prototype_temperature, labels=d.test.labels,
                            num_classes=len(d.class_names or []), num_prototypes=em.num_prototypes,
                            chunk_size=ctx.batch_size)
    return [TaskResult(d.name, PROTOTYPE_COLLAPSE, stats.metrics() | {"images": len(image_logits)}, stats.usage())]
