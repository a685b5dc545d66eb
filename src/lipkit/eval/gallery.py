"""Prototype gallery: what each nCLIP prototype stands for, seen from both modalities.

Over a split's images and one caption each, with the prototype heads' logits [N, K]: for every
prototype, the images and the captions whose argmax it is (ties to the lower index), its `top_k`
images (highest logit, whoever's argmax they are), its most frequent captions, and, with labels,
its purity (the share of its images in its most common class) and that class. Over the split:

- `image_purity` / `text_purity`: Σ_p max_c n(p, c) / N, the share of images (captions) in their
  prototype's majority class (1: every prototype holds one class; a single prototype for
  everything scores the largest class's share);
- `cross_modal_agreement`: the share of pairs whose image and caption pick the same prototype;
  per prototype, `agreement` is that share among its images;
- `prototypes_used` / `text_prototypes_used`: prototypes that are some image's (caption's) argmax.

Everything accumulates batch by batch (`PrototypeGallery.update`): K × top_k logits, K × C
counts and the caption counts are all it keeps.
"""
from __future__ import annotations

from collections import Counter

import torch

from .collapse import _first_argmax


class PrototypeGallery:
    def __init__(self, num_prototypes: int, top_k: int = 8, num_classes: int = 0):
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        k = num_prototypes
        self.k, self.top_k, self.num_classes, self.n = k, top_k, num_classes, 0
        self.top_logits = torch.full((k, 0), float("-inf"), dtype=torch.float64)
        self.top_images = torch.zeros((k, 0), dtype=torch.long)
        self.image_counts = torch.zeros(k, dtype=torch.long)
        self.text_counts = torch.zeros(k, dtype=torch.long)
        self.agreeing = torch.zeros(k, dtype=torch.long)
        self.image_by_class = torch.zeros(k, max(num_classes, 1), dtype=torch.long)
        self.text_by_class = torch.zeros(k, max(num_classes, 1), dtype=torch.long)
        self.captions: dict[int, Counter] = {}

    def update(self, image_logits: torch.Tensor, text_logits: torch.Tensor, captions: list[str],
               labels: torch.Tensor | None = None) -> None:
        """Add a batch of paired logits [B, K] (rows are images self.n, self.n + 1, ...)."""
        b = image_logits.shape[0]
        if image_logits.shape != text_logits.shape or image_logits.shape[1] != self.k or len(captions) != b:
            raise ValueError(f"expected paired logits [B, {self.k}] and B captions, got "
                             f"{tuple(image_logits.shape)}, {tuple(text_logits.shape)} and {len(captions)}")
        image_logits, text_logits = image_logits.double().cpu(), text_logits.double().cpu()
        index = torch.arange(self.n, self.n + b).expand(self.k, b)
        logits = torch.cat([self.top_logits, image_logits.T], dim=1)
        order = logits.sort(dim=1, descending=True, stable=True).indices[:, :self.top_k]
        self.top_logits = logits.gather(1, order)
        self.top_images = torch.cat([self.top_images, index], dim=1).gather(1, order)
        image_top, text_top = _first_argmax(image_logits), _first_argmax(text_logits)
        self.image_counts += torch.bincount(image_top, minlength=self.k)
        self.text_counts += torch.bincount(text_top, minlength=self.k)
        self.agreeing += torch.bincount(image_top[image_top == text_top], minlength=self.k)
        for p, caption in zip(text_top.tolist(), captions):
            self.captions.setdefault(p, Counter())[caption] += 1
        if labels is not None and self.num_classes:
            labels = torch.as_tensor(labels, dtype=torch.long).cpu()
            c = self.num_classes
            self.image_by_class += torch.bincount(image_top * c + labels, minlength=self.k * c).view(self.k, c)
            self.text_by_class += torch.bincount(text_top * c + labels, minlength=self.k * c).view(self.k, c)
        self.n += b

    def metrics(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no samples: call update() before metrics()")
        out = {"images": self.n, "num_prototypes": self.k,
               "prototypes_used": int((self.image_counts > 0).sum()),
               "text_prototypes_used": int((self.text_counts > 0).sum()),
               "cross_modal_agreement": int(self.agreeing.sum()) / self.n}
        if self.num_classes:
            out.update(num_classes=self.num_classes,
                       image_purity=int(self.image_by_class.max(dim=1).values.sum()) / self.n,
                       text_purity=int(self.text_by_class.max(dim=1).values.sum()) / self.n)
        return out

    def prototypes(self, class_names: list[str] | None = None, captions: int = 3) -> list[dict]:
        """Each used prototype (by images or captions), most used by images first: its usage
        shares, top images, most frequent captions, agreement, and purity with labels."""
        used = [p for p in range(self.k) if self.image_counts[p] or self.text_counts[p]]
        used.sort(key=lambda p: (-int(self.image_counts[p]), -int(self.text_counts[p]), p))
        out = []
        for p in used:
            count = int(self.image_counts[p])
            entry = {"prototype": p, "usage": count / self.n, "text_usage": int(self.text_counts[p]) / self.n,
                     "agreement": int(self.agreeing[p]) / count if count else 0.0,
                     "top_images": self.top_images[p].tolist(),
                     "top_logits": [round(v, 5) for v in self.top_logits[p].tolist()],
                     "captions": [[text, n] for text, n in self.captions.get(p, Counter()).most_common(captions)]}
            if self.num_classes and count:
                by_class = self.image_by_class[p]
                top = int(by_class.argmax())
                entry.update(purity=int(by_class[top]) / count,
                             label=class_names[top] if class_names and top < len(class_names) else top)
            out.append(entry)
        return out
