"""Prototype collapse diagnostics over a whole dataset (for nCLIP / xCLIP models).

From paired image and text prototype logits [N, K] (the nCLIP heads' cosines), with
p_i = softmax(logits_i / temperature):

- usage entropy: H(p̄) / log K, p̄ the mean of p_i over the dataset. 1 = every prototype used
  equally; 0 = one prototype takes all the mass (collapse to a single prototype);
- argmax usage: how many distinct prototypes are some sample's argmax, and the entropy of that
  histogram / log K;
- per-sample entropy: mean H(p_i) / log K. Near 1 = uniform, undecided outputs (the other
  collapse); near 0 = confident assignments. Also the mean max probability;
- image/text argmax agreement: the share of pairs whose image and text pick the same prototype.

Everything accumulates chunk by chunk (`PrototypeStats.update`), so a dataset of any size is
one pass. Argmax ties go to the lower prototype index.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .features import eval_mode, model_device


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy along the last axis, with 0 log 0 = 0."""
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(dim=-1)


def _first_argmax(x: torch.Tensor) -> torch.Tensor:
    # torch.argmax does not promise the first of equal maxima on every backend; this does.
    is_max = x == x.max(dim=1, keepdim=True).values
    index = torch.arange(x.shape[1]).expand_as(x)
    return torch.where(is_max, index, x.shape[1]).min(dim=1).values


class _Side:
    def __init__(self, k: int):
        self.prob_sum = torch.zeros(k, dtype=torch.float64)
        self.entropy_sum = 0.0
        self.max_prob_sum = 0.0
        self.argmax_counts = torch.zeros(k, dtype=torch.long)

    def update(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        p = torch.softmax(logits.double() / temperature, dim=-1)
        self.prob_sum += p.sum(dim=0)
        self.entropy_sum += _entropy(p).sum().item()
        self.max_prob_sum += p.max(dim=-1).values.sum().item()
        top = _first_argmax(logits.double())
        self.argmax_counts += torch.bincount(top, minlength=p.shape[1])
        return top

    def metrics(self, prefix: str, n: int) -> dict[str, float]:
        log_k = math.log(len(self.prob_sum))
        counts = self.argmax_counts.double()
        return {
            f"{prefix}_usage_entropy_ratio": _entropy(self.prob_sum / n).item() / log_k,
            f"{prefix}_argmax_entropy_ratio": _entropy(counts / n).item() / log_k,
            f"{prefix}_distinct_prototypes": int((self.argmax_counts > 0).sum()),
            f"{prefix}_sample_entropy_ratio": self.entropy_sum / n / log_k,
            f"{prefix}_mean_max_prob": self.max_prob_sum / n,
        }


class PrototypeStats:
    """Accumulates the diagnostics over chunks of paired (image, text) prototype logits."""

    def __init__(self, num_prototypes: int, temperature: float = 0.1):
        if num_prototypes < 2:
            raise ValueError(f"need at least 2 prototypes, got {num_prototypes}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.k, self.temperature, self.n, self.agree = num_prototypes, temperature, 0, 0
        self.image, self.text = _Side(num_prototypes), _Side(num_prototypes)

    def update(self, image_logits: torch.Tensor, text_logits: torch.Tensor) -> None:
        if image_logits.shape != text_logits.shape or image_logits.ndim != 2:
            raise ValueError(f"image and text logits must both be [N, {self.k}], got "
                             f"{tuple(image_logits.shape)} and {tuple(text_logits.shape)}")
        if image_logits.shape[1] != self.k:
            raise ValueError(f"expected {self.k} prototypes, got logits of width "
                             f"{image_logits.shape[1]}")
        if not (torch.isfinite(image_logits).all() and torch.isfinite(text_logits).all()):
            raise ValueError("prototype logits contain NaN or inf")
        image_top = self.image.update(image_logits.cpu(), self.temperature)
        text_top = self.text.update(text_logits.cpu(), self.temperature)
        self.agree += int((image_top == text_top).sum())
        self.n += image_logits.shape[0]

    def metrics(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no samples: call update() before metrics()")
        out = {"num_prototypes": self.k, "temperature": self.temperature}
        out.update(self.image.metrics("image", self.n))
        out.update(self.text.metrics("text", self.n))
        out["argmax_agreement"] = self.agree / self.n
        return out

    def usage(self) -> dict[str, list[int]]:
        """Argmax count per prototype, per modality (for the report's histogram)."""
        return {"image_argmax_counts": self.image.argmax_counts.tolist(),
                "text_argmax_counts": self.text.argmax_counts.tolist()}


def evaluate(image_logits: torch.Tensor, text_logits: torch.Tensor, *, temperature: float = 0.1,
             chunk_size: int = 4096) -> dict[str, float]:
    """The diagnostics of paired prototype logits [N, K] (see the module docstring)."""
    image_logits, text_logits = torch.as_tensor(image_logits), torch.as_tensor(text_logits)
    if image_logits.ndim != 2 or image_logits.shape[0] == 0:
        raise ValueError(f"image_logits must be [N, K] with N > 0, got {tuple(image_logits.shape)}")
    stats = PrototypeStats(image_logits.shape[1], temperature)
    for start in range(0, image_logits.shape[0], chunk_size):
        stats.update(image_logits[start:start + chunk_size], text_logits[start:start + chunk_size])
    return stats.metrics()


PrototypeFn = Callable[[torch.Tensor], torch.Tensor]


def evaluate_model(image_prototypes: PrototypeFn, text_prototypes: PrototypeFn, model,
                   tokenize, images: torch.Tensor, captions: list[str], *,
                   num_prototypes: int, temperature: float = 0.1, batch_size: int = 256
                   ) -> tuple[dict[str, float], dict[str, list[int]]]:
    """Run the prototype functions (images -> [B, K], tokens -> [B, K]) over (image, caption)
    pairs in batches; returns (metrics, usage histograms)."""
    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    stats = PrototypeStats(num_prototypes, temperature)
    device = model_device(model)
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            tokens = tokenize(captions[start:start + batch_size])
            if device is not None:
                x, tokens = x.to(device), tokens.to(device)
            stats.update(image_prototypes(x).float(), text_prototypes(tokens).float())
    return stats.metrics(), stats.usage()
