"""Does an attention map cover the object? DINO's Jaccard measure, and its trivial baselines.

A map (non-negative weights over a grid × grid patch raster) becomes a mask as in DINO
(Caron et al. 2021, `visualize_attention.py`): keep the patches that hold a share `mass` (0.6) of
the map's total, largest first. Equal weights are kept or dropped together: a patch is kept when
the weights strictly above its own sum to less than `mass` of the total, which is DINO's rule
wherever weights differ, and keeps every patch of a uniform map. The kept patches are upsampled
(each patch to its `patch` × `patch` pixels) and compared with the foreground mask by the Jaccard
index |kept ∩ mask| / |kept ∪ mask|.

Baselines, thresholded the same way: a centred Gaussian (standard deviation `sigma` of the
side), the prior that objects sit in the middle; and a uniform map, which keeps every patch and
so scores the mask's share of the image. `jaccard_gain` is the heads' mean map's Jaccard minus the
better of the two.

`LocalizationStats` sums the per-image Jaccard of each map kind over batches, so a set of any
size is one pass that holds one batch of maps at a time.
"""
from __future__ import annotations

import torch


def keep_mass(maps: torch.Tensor, mass: float) -> torch.Tensor:
    """bool [..., P]: the patches of `maps` [..., P] (non-negative) that hold `mass` of each map's
    total, largest first, ties kept together."""
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    maps = maps.double()
    ascending, _ = maps.sort(dim=-1)
    cumulative = ascending.cumsum(dim=-1)
    total = cumulative[..., -1:]
    at_most = torch.searchsorted(ascending.contiguous(), maps.contiguous(), right=True)  # weights <= own
    mass_at_most = cumulative.gather(-1, at_most - 1)
    return (total - mass_at_most) < mass * total


def upsample(kept: torch.Tensor, grid: int, patch: int) -> torch.Tensor:
    """bool [..., grid * patch, grid * patch] from kept patches [..., grid * grid] (row-major)."""
    square = kept.unflatten(-1, (grid, grid))
    return square.repeat_interleave(patch, dim=-2).repeat_interleave(patch, dim=-1)


def jaccard(kept: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """|a ∩ b| / |a ∪ b| per image over the last two axes (1 when both are empty)."""
    inter = (kept & masks).flatten(-2).sum(-1).double()
    union = (kept | masks).flatten(-2).sum(-1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def gaussian_prior(grid: int, sigma: float) -> torch.Tensor:
    """[grid * grid]: a centred isotropic Gaussian on the patch raster, `sigma` a share of the side."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    centre = (grid - 1) / 2
    y, x = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                          indexing="ij")
    s = sigma * grid
    return torch.exp(-((x - centre) ** 2 + (y - centre) ** 2) / (2 * s * s)).flatten()


class LocalizationStats:
    """Mean Jaccard over images of each head, the heads' mean map, rollout and the two baselines."""

    def __init__(self, grid: int, patch: int, mass: float = 0.6, sigma: float = 0.25):
        self.grid, self.patch, self.mass = grid, patch, mass
        self.prior = gaussian_prior(grid, sigma)
        self.n = 0
        self.sums: dict[str, torch.Tensor] = {}
        self.mask_area = 0.0

    def _add(self, key: str, values: torch.Tensor) -> None:
        total = values.sum(dim=0)
        self.sums[key] = self.sums.get(key, torch.zeros_like(total)) + total

    def score(self, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Jaccard per image (and per head) of maps [B, ..., P] against masks [B, S, S]."""
        kept = upsample(keep_mass(maps, self.mass), self.grid, self.patch)
        extra = maps.ndim - 2
        return jaccard(kept, masks.view(masks.shape[0], *([1] * extra), *masks.shape[1:]))

    def update(self, heads: torch.Tensor, masks: torch.Tensor, rollout: torch.Tensor | None = None
               ) -> torch.Tensor:
        """Add a batch: heads [B, H, P] attention, masks bool [B, S, S]; returns the per-head
        Jaccard of the batch [B, H]."""
        b = heads.shape[0]
        per_head = self.score(heads, masks)
        self._add("heads", per_head)
        self._add("mean_map", self.score(heads.mean(dim=1), masks))
        if rollout is not None:
            self._add("rollout", self.score(rollout, masks))
        self._add("gaussian_prior", self.score(self.prior.expand(b, -1), masks))
        self._add("uniform", self.score(torch.ones(b, heads.shape[-1], dtype=torch.float64), masks))
        self.mask_area += masks.flatten(1).double().mean(dim=1).sum().item()
        self.n += b
        return per_head

    @property
    def head_means(self) -> torch.Tensor:
        return self.sums["heads"] / self.n

    @property
    def best_head(self) -> int:
        return int(self.head_means.argmax())

    def metrics(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no images scored")
        heads = self.head_means
        out = {f"jaccard_head{h}": float(v) for h, v in enumerate(heads)}
        out.update(jaccard_mean_map=float(self.sums["mean_map"] / self.n),
                   jaccard_best_head=float(heads.max()), best_head=self.best_head)
        if "rollout" in self.sums:
            out["jaccard_rollout"] = float(self.sums["rollout"] / self.n)
        out.update(jaccard_gaussian_prior=float(self.sums["gaussian_prior"] / self.n),
                   jaccard_uniform=float(self.sums["uniform"] / self.n), mask_area=self.mask_area / self.n,
                   images=self.n, attention_mass=self.mass)
        out["jaccard_gain"] = out["jaccard_mean_map"] - max(out["jaccard_gaussian_prior"], out["jaccard_uniform"])
        return out
