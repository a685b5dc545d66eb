"""The synthetic data model of the theory lab (OBJECTIVES.md §6, after Chen et al.).

A pair shares a latent z (the class: a one-hot code, or a sparse set of attributes) and an
instance latent e (features both modalities describe, unrelated to the class); each modality adds
its own noise and its own unique features:

    image x = [A z + B e + noise_x ; u]        text y = [C z + D e + noise_y ; w]

A, B, C, D are fixed random maps drawn from the seed. Every block is scaled so its expected norm
is the configured std (z has unit norm), so the sizes compare directly. The zero-shot prompt of
class k is its noise-free text [C z_k ; 0].
"""
from __future__ import annotations

import itertools
import math

import torch

from lipkit.theory.config import SyntheticDataConfig


def class_codes(cfg: SyntheticDataConfig, generator: torch.Generator) -> torch.Tensor:
    """[K, m] unit-norm latent codes: one-hot rows, or K distinct attribute sets of equal size."""
    k = cfg.num_classes
    if cfg.latent == "onehot":
        return torch.eye(k)
    m, s = cfg.num_attributes, cfg.attributes_per_class
    if math.comb(m, s) <= 100_000:
        subsets = list(itertools.combinations(range(m), s))
        chosen = [subsets[i] for i in torch.randperm(len(subsets), generator=generator)[:k].tolist()]
    else:
        seen: set[tuple[int, ...]] = set()
        chosen = []
        while len(chosen) < k:
            subset = tuple(sorted(torch.randperm(m, generator=generator)[:s].tolist()))
            if subset not in seen:
                seen.add(subset)
                chosen.append(subset)
    codes = torch.zeros(k, m)
    for row, subset in enumerate(chosen):
        codes[row, list(subset)] = 1.0
    return codes / math.sqrt(s)


def _gaussian(n: int, dim: int, norm: float, generator: torch.Generator) -> torch.Tensor:
    """n vectors in R^dim with i.i.d. entries of variance norm^2 / dim (expected norm ~ `norm`)."""
    if dim == 0:
        return torch.zeros(n, 0)
    return torch.randn(n, dim, generator=generator) * (norm / math.sqrt(dim))


class SyntheticDataModel:
    def __init__(self, cfg: SyntheticDataConfig, seed: int):
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        self.codes = class_codes(cfg, g)
        m = self.codes.shape[1]
        # Random maps whose columns have expected norm 1, so |A z| ~ |z| = 1 and |B e| ~ |e|.
        self.A = torch.randn(cfg.image_shared_dim, m, generator=g) / math.sqrt(cfg.image_shared_dim)
        self.C = torch.randn(cfg.text_shared_dim, m, generator=g) / math.sqrt(cfg.text_shared_dim)
        self.B = torch.randn(cfg.image_shared_dim, cfg.instance_dim, generator=g) / math.sqrt(cfg.image_shared_dim)
        self.D = torch.randn(cfg.text_shared_dim, cfg.instance_dim, generator=g) / math.sqrt(cfg.text_shared_dim)

    @property
    def num_classes(self) -> int:
        return self.codes.shape[0]

    @property
    def image_dim(self) -> int:
        return self.cfg.image_shared_dim + self.cfg.image_unique_dim

    @property
    def text_dim(self) -> int:
        return self.cfg.text_shared_dim + self.cfg.text_unique_dim

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n pairs: images [n, image_dim], texts [n, text_dim], class labels [n]."""
        cfg = self.cfg
        labels = torch.randint(self.num_classes, (n,), generator=generator)
        z = self.codes[labels]
        e = _gaussian(n, cfg.instance_dim, cfg.instance_std, generator)
        x_shared = z @ self.A.T + e @ self.B.T + _gaussian(n, cfg.image_shared_dim, cfg.noise_std, generator)
        y_shared = z @ self.C.T + e @ self.D.T + _gaussian(n, cfg.text_shared_dim, cfg.noise_std, generator)
        u = _gaussian(n, cfg.image_unique_dim, cfg.unique_std, generator)
        w = _gaussian(n, cfg.text_unique_dim, cfg.unique_std, generator)
        return torch.cat([x_shared, u], dim=1), torch.cat([y_shared, w], dim=1), labels

    def prompts(self) -> torch.Tensor:
        """[K, text_dim]: the noise-free text of every class (no instance, noise or unique part)."""
        return torch.cat([self.codes @ self.C.T, torch.zeros(self.num_classes, self.cfg.text_unique_dim)], dim=1)
