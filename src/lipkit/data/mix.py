"""Several map-style pair datasets mixed with weights, still map-style (so samplers, resume and
the frozen-tower feature cache work on it).

An epoch has `len(mix)` = the sum of the sources' sizes (or `epoch_size`) positions; source k gets
a share weights[k] / sum(weights) of them (largest remainder). Its positions walk through a fresh
seeded permutation of its items, again and again if it is oversampled, or through part of one if
it is undersampled: a different part each epoch. Labels are dropped: label spaces differ across
sources.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch.utils.data import Dataset

from .pairs import PairDataset, checked_index, first_usable, sample_hash, shared_epoch


def allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Integers summing to `total`, proportional to `weights` (largest-remainder rounding)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    remainder = total - int(counts.sum())
    for k in np.argsort(-(exact - counts), kind="stable")[:remainder]:
        counts[k] += 1
    return counts.tolist()


class MixedPairs(Dataset):
    """Map-style mix; `resolve(i)` says which source and item position i is this epoch."""

    has_labels = False

    def __init__(self, datasets: Sequence[PairDataset], weights: Sequence[float], seed: int = 0, epoch_size: int = 0):
        if not datasets or len(datasets) != len(weights):
            raise ValueError(f"need one weight per source: {len(datasets)} sources, {len(weights)} weights")
        if any(not (w > 0) for w in weights):
            raise ValueError(f"source weights must be positive, got {list(weights)}")
        if any(len(d) == 0 for d in datasets):
            empty = [d.name for d in datasets if len(d) == 0]
            raise ValueError(f"source(s) {', '.join(empty)} have no usable pairs")
        self.datasets = list(datasets)
        self.weights = [float(w) for w in weights]
        self.seed = seed
        self.size = epoch_size or sum(len(d) for d in datasets)
        self.counts = allocate(self.size, self.weights)
        self._epoch = shared_epoch()
        self._plans: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.name = "+".join(d.name for d in datasets)
        self.skipped = [s for d in datasets for s in d.skipped]

    def __len__(self) -> int:
        return self.size

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)
        for d in self.datasets:
            d.set_epoch(epoch)

    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(source index, item index) for every position of `epoch`."""
        if epoch not in self._plans:
            sources, items = [], []
            for k, (d, count) in enumerate(zip(self.datasets, self.counts)):
                n, cycles = len(d), -(-count // len(d))
                order = np.concatenate([
                    np.random.default_rng(sample_hash(self.seed, epoch, k, 6 + c)).permutation(n) for c in range(cycles)
                ])[:count] if count else np.zeros(0, dtype=np.int64)
                sources.append(np.full(count, k, dtype=np.int64))
                items.append(order)
            self._plans = {epoch: (np.concatenate(sources), np.concatenate(items))}  # keep one epoch
        return self._plans[epoch]

    def resolve(self, index: int, epoch: int | None = None) -> tuple[PairDataset, int]:
        src, items = self.plan(self.epoch if epoch is None else epoch)
        return self.datasets[int(src[index])], int(items[index])

    def possible_captions(self) -> list[str]:
        return [c for d in self.datasets for c in d.possible_captions()]

    def item(self, index: int, epoch: int | None = None) -> dict:
        e = self.epoch if epoch is None else epoch
        d, j = self.resolve(index, e)
        out = d.item(j, e)
        out.pop("label", None)
        out["index"] = index
        return out

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        return first_usable(checked_index(index, n), n, seed=self.seed, epoch=self.epoch, name=self.name, item=self.item)
