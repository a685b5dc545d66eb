"""Micro-batches for the loop, with a position a checkpoint stores and resumes from exactly.

Map-style datasets: every epoch is a permutation of the dataset seeded by (seed, epoch), cut into
global batches of `train.batch_size` (an incomplete last batch is dropped). Rank r of W takes the
contiguous rows [r*G/W, (r+1)*G/W) of each global batch, in `accum_steps` micro-batches, so the
batch gathered in rank order is exactly the batch one process would see. The position after a
step is (epoch, samples consumed in that epoch); a resumed run starts the sampler there.

Each item is fetched with python, numpy and torch's generators seeded from (seed, epoch, index),
so random augmentations do not depend on the data-loader worker, the number of workers or
processes, or on where a run was resumed; data-loader workers therefore hold no state worth saving.
In the main process the generators are put back after each batch, so loading data never moves
the training stream (dropout).

Iterable datasets (unknown length, e.g. WebDataset shards) have no sampler: they must shard
themselves over ranks and workers. Their position is counted the same way, and a resumed run
skips the consumed samples of the current epoch: exact when the dataset yields the same items
for the same epoch, best effort otherwise.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from lipkit.config import ConfigError
from lipkit.train.rng import capture_host_rng, mix_seed, restore_host_rng, seed_all


class BatchIndices(list):
    """One micro-batch of dataset indices tagged with its epoch (the tag travels to workers)."""

    def __init__(self, indices, epoch: int):
        super().__init__(indices)
        self.epoch = epoch


class SeededItems(Dataset):
    """A map-style dataset whose items are drawn under generators seeded per (seed, epoch, index);
    forwards `set_epoch` to the dataset in whichever process fetches."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed
        self._epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.__getitems__(BatchIndices([index], self._epoch or 0))[0]

    def __getitems__(self, indices: list[int]) -> list:
        epoch = getattr(indices, "epoch", 0)
        if epoch != self._epoch:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            self._epoch = epoch
        if not getattr(self.dataset, "item_rng", True) and hasattr(self.dataset, "__getitems__"):
            return self.dataset.__getitems__(list(indices))  # no generator to seed per item
        saved = capture_host_rng() if get_worker_info() is None else None
        try:
            items = []
            for index in indices:
                seed_all(mix_seed(self.seed, epoch, index))
                items.append(self.dataset[index])
            return items
        finally:
            if saved is not None:
                restore_host_rng(saved)


class EpochBatchSampler:
    """Infinite stream of BatchIndices for this rank, starting at (start_epoch, start_round)."""

    def __init__(self, num_items: int, global_batch: int, world_size: int, rank: int, accum_steps: int,
                 seed: int, start_epoch: int = 0, start_round: int = 0):
        self.n, self.global_batch, self.world_size, self.rank = num_items, global_batch, world_size, rank
        self.accum_steps, self.seed = accum_steps, seed
        self.share = global_batch // world_size
        self.micro = self.share // accum_steps
        self.rounds_per_epoch = num_items // global_batch
        self.start_epoch, self.start_round = start_epoch, start_round

    def permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch)))

    def __iter__(self) -> Iterator[BatchIndices]:
        epoch, first = self.start_epoch, self.start_round
        while True:
            perm = self.permutation(epoch)
            for r in range(first, self.rounds_per_epoch):
                start = r * self.global_batch + self.rank * self.share
                share = perm[start : start + self.share].tolist()
                for m in range(self.accum_steps):
                    yield BatchIndices(share[m * self.micro : (m + 1) * self.micro], epoch)
            epoch, first = epoch + 1, 0


def batch_layout(global_batch: int, world_size: int, accum_steps: int) -> int:
    """The micro-batch size per process, or a one-line error naming the fields."""
    if accum_steps < 1:
        raise ConfigError(f"train.accum_steps: must be >= 1, got {accum_steps}")
    per = world_size * accum_steps
    if global_batch < per or global_batch % per:
        raise ConfigError(
            f"train.batch_size {global_batch} must be a multiple of processes x train.accum_steps "
            f"= {world_size} x {accum_steps} = {per}"
        )
    return global_batch // per


def check_batch_fits(dataset, global_batch: int) -> None:
    """A map-style dataset must hold at least one global batch (a stream's size is not known)."""
    if not isinstance(dataset, IterableDataset) and len(dataset) < global_batch:
        raise ConfigError(f"train.batch_size {global_batch} is larger than the training set ({len(dataset)} pairs)")


def _rows(batch: dict) -> int:
    return next(len(v) for v in batch.values() if isinstance(v, torch.Tensor))


class BatchStream:
    """Micro-batches forever, and `position()`: {"epoch", "samples_in_epoch"} (global samples)."""

    def __init__(self, dataset, *, global_batch: int, accum_steps: int, world_size: int, rank: int, seed: int,
                 num_workers: int = 0, pin_memory: bool = False, position: dict | None = None):
        self.micro = batch_layout(global_batch, world_size, accum_steps)
        self.global_batch, self.world_size, self.rank, self.seed = global_batch, world_size, rank, seed
        self.num_workers, self.pin_memory = num_workers, pin_memory
        position = position or {"epoch": 0, "samples_in_epoch": 0}
        self.epoch, self.samples_in_epoch = int(position["epoch"]), int(position["samples_in_epoch"])
        self.iterable = isinstance(dataset, IterableDataset)
        self.dataset = dataset
        if self.iterable:
            self._iter = self._iterable_epochs()
            return
        check_batch_fits(dataset, global_batch)
        self.sampler = EpochBatchSampler(
            len(dataset), global_batch, world_size, rank, accum_steps, seed,
            start_epoch=self.epoch, start_round=self.samples_in_epoch // global_batch,
        )
        self.samples_per_epoch = self.sampler.rounds_per_epoch * global_batch
        if self.samples_in_epoch >= self.samples_per_epoch:  # saved right at an epoch's end
            self.sampler.start_epoch, self.sampler.start_round = self.epoch + 1, 0
            self.epoch, self.samples_in_epoch = self.epoch + 1, 0
        loader = DataLoader(
            SeededItems(dataset, seed), batch_sampler=self.sampler, num_workers=num_workers,
            pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed),
        )
        self._iter = iter(loader)

    def _epoch_loader(self, epoch: int) -> DataLoader:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return DataLoader(
            self.dataset, batch_size=self.micro, drop_last=False, num_workers=self.num_workers,
            pin_memory=self.pin_memory, generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch, self.rank)),
        )

    def _iterable_epochs(self):
        skip = self.samples_in_epoch // (self.micro * self.world_size)
        empty_epochs = 0
        carried: list[str] = []  # bad samples reported on incomplete batches, passed on to the next one
        while True:
            produced = 0
            for batch in self._epoch_loader(self.epoch):
                if _rows(batch) < self.micro:  # a loader's last, incomplete batch: not trained on
                    carried += batch.get("skipped", [])
                    continue
                produced += 1
                if produced > skip:
                    if carried:
                        batch["skipped"], carried = carried + list(batch.get("skipped", [])), []
                    yield batch
            skip = 0
            empty_epochs = empty_epochs + 1 if produced == 0 else 0
            if empty_epochs > 1:
                raise ConfigError(f"the training set yields no batch of {self.micro} (train.batch_size too large?)")
            self.epoch, self.samples_in_epoch = self.epoch + 1, 0

    def __next__(self):
        batch = next(self._iter)
        self.samples_in_epoch += self.micro * self.world_size
        if not self.iterable and self.samples_in_epoch >= self.samples_per_epoch:
            self.epoch, self.samples_in_epoch = self.epoch + 1, 0
        return batch

    def __iter__(self):
        return self

    def position(self) -> dict:
        return {"epoch": self.epoch, "samples_in_epoch": self.samples_in_epoch}

    def close(self) -> None:
        self._iter = None  # shuts data-loader workers down
