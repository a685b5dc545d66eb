"""Iterable pair datasets: splitting work over ranks × DataLoader workers, and mixing sources.

Every stream reads only its share: slot `rank * num_workers + worker` of `world_size *
num_workers` slots, so within an epoch no sample is read twice across all processes. Shuffles are
seeded by (seed, epoch) and identical on every rank, so the split is a partition.

Epochs: `set_epoch(e)` before iterating (what the trainer does) picks epoch e, also in DataLoader
workers (the counter lives in shared memory); a stream iterated again without a new `set_epoch`
moves on to the next epoch by itself, so reshuffling never silently stops.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .images import BadSampleError
from .pairs import PairDataset, decode_skips, encode_skips, sample_hash, shared_epoch

log = logging.getLogger("lipkit.data")
_MAX_PASSES = 1_000_003  # passes over one source within one epoch of a mix (distinct epoch numbers)


def attach_skips(items: Iterator[dict], good_key: str = "image") -> Iterator[dict]:
    """Only usable items, each carrying in "skipped" (encoded, see pairs.encode_skips) the bad
    samples met since the previous one. One item is held back so that bad samples at the very end
    ride on the last item: a skip-only item would make its batch one sample short. With no usable
    item at all the bad samples can only be logged here."""
    held, pending = None, []
    for item in items:
        pending += decode_skips(item.pop("skipped", None))
        if good_key not in item:
            continue
        if held is not None:
            yield held
        item["skipped"], pending = encode_skips(pending), []
        held = item
    if held is not None:
        held["skipped"] = encode_skips(decode_skips(held["skipped"]) + pending)
        yield held
    elif pending:
        for where, reason in pending:
            log.warning("skipped %s: %s", where, reason)


def worker_slot() -> tuple[int, int]:
    """(slot, number of slots) of this process and DataLoader worker."""
    from lipkit import distributed

    rank, world = distributed.rank(), distributed.world_size()
    info = get_worker_info()
    wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * nw + wid, world * nw


class EpochStream(IterableDataset):
    """Base: epoch bookkeeping that survives persistent workers."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._epoch = shared_epoch()
        self._calls = shared_epoch()  # how many times set_epoch was called (shared like the epoch)
        self._last_epoch, self._seen_calls = -1, 0

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)
        self._calls.add_(1)

    def _begin_epoch(self) -> int:
        calls = int(self._calls)
        epoch = self.epoch if calls != self._seen_calls else self._last_epoch + 1
        self._last_epoch, self._seen_calls = epoch, calls
        return epoch

    def possible_captions(self) -> list[str]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict]:
        return self.iter_epoch(self._begin_epoch())

    def iter_epoch(self, epoch: int) -> Iterator[dict]:
        """This slot's items of `epoch` (usable items only, bad ones reported on them)."""
        raise NotImplementedError


class MapStream(EpochStream):
    """A map-style PairDataset read as a stream: a seeded permutation per epoch, split by slot.
    Unusable samples are dropped and reported on the next item (`"skipped"`)."""

    def __init__(self, dataset: PairDataset, seed: int = 0, shuffle: bool = True):
        super().__init__(seed)
        self.dataset, self.shuffle = dataset, shuffle
        self.name = dataset.name

    def __len__(self) -> int:
        return len(self.dataset)

    def possible_captions(self) -> list[str]:
        return self.dataset.possible_captions()

    def iter_epoch(self, epoch: int) -> Iterator[dict]:
        return attach_skips(self._items(epoch))

    def _items(self, epoch: int) -> Iterator[dict]:
        slot, slots = worker_slot()
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator().manual_seed(sample_hash(self.seed, epoch, 0, 4) & 0x7FFF_FFFF_FFFF_FFFF)
            order = torch.randperm(n, generator=g)[slot::slots].tolist()
        else:
            order = list(range(slot, n, slots))
        for i in order:
            try:
                yield self.dataset.item(i, epoch)
            except BadSampleError as e:
                yield {"skipped": [(e.where, e.reason)]}


class MixedStream(EpochStream):
    """Several streams interleaved: each sample comes from source k with probability
    weights[k] / sum(weights). An epoch ends once every source has been read through at least
    once; a source that runs out before then starts its next epoch. Labels are dropped (the
    sources' label spaces differ)."""

    def __init__(self, streams: Sequence[EpochStream], weights: Sequence[float], seed: int = 0):
        super().__init__(seed)
        if len(streams) != len(weights) or not streams:
            raise ValueError(f"need one weight per source: {len(streams)} sources, {len(weights)} weights")
        if any(not (w > 0) for w in weights):
            raise ValueError(f"source weights must be positive, got {list(weights)}")
        self.streams = list(streams)
        total = float(sum(weights))
        self.weights = [w / total for w in weights]
        self.name = "+".join(getattr(s, "name", "?") for s in streams)

    def possible_captions(self) -> list[str]:
        return [c for s in self.streams for c in s.possible_captions()]

    def iter_epoch(self, epoch: int) -> Iterator[dict]:
        return attach_skips(self._items(epoch))

    def _items(self, epoch: int) -> Iterator[dict]:
        slot, _ = worker_slot()
        rng = random.Random(sample_hash(self.seed, epoch, slot, 5))
        # a source read again within this epoch reads its next epoch (distinct shuffles)
        passes = [0] * len(self.streams)
        iters = [s.iter_epoch(epoch * _MAX_PASSES) for s in self.streams]
        weights = list(self.weights)
        finished = [False] * len(self.streams)
        idle = [0] * len(self.streams)  # consecutive empty passes: a source this slot gets nothing from
        while not all(finished):
            k = rng.choices(range(len(iters)), weights=weights)[0]
            try:
                item = next(iters[k])
                idle[k] = 0
            except StopIteration:
                finished[k] = True
                idle[k] += 1
                if idle[k] > 1:  # an empty share for this slot: never draw from it again
                    weights[k] = 0.0
                    if not any(weights):
                        break
                    continue
                passes[k] += 1
                iters[k] = self.streams[k].iter_epoch(epoch * _MAX_PASSES + passes[k] % _MAX_PASSES)
                continue
            item.pop("label", None)
            yield item
