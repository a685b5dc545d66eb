"""Batches and their position: the sampler's global batches are the same at any process count and
accumulation; items are drawn under per-(seed, epoch, index) generators; a stream restarted at a
saved position continues exactly, for map-style and iterable datasets."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from lipkit.config import ConfigError
from lipkit.train.batches import BatchIndices, BatchStream, EpochBatchSampler, SeededItems, batch_layout


class Noisy(Dataset):
    """Items that draw from python, numpy and torch's global generators, and see the epoch."""

    def __init__(self, n: int = 40):
        self.n, self.epoch = n, 0

    def __len__(self):
        return self.n

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, i):
        noise = torch.rand(2) + np.random.rand() + random.random()
        return {"index": i, "epoch": self.epoch, "image": noise, "caption": f"item {i}"}


class NoisyStream(IterableDataset):
    """An iterable dataset, deterministic per epoch (what exact resume of a stream needs)."""

    def __init__(self, n: int = 40):
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.epoch)
        for i in torch.randperm(self.n, generator=g).tolist():
            yield {"index": i, "epoch": self.epoch, "image": torch.full((2,), float(i)), "caption": f"item {i}"}


def _take(stream, n):
    return [next(stream) for _ in range(n)]


def _ids(batches):
    return [(b["epoch"][0].item(), b["index"].tolist()) for b in batches]


def test_global_batches_do_not_depend_on_processes_or_accumulation():
    n, g = 50, 12  # 4 global batches an epoch, 2 items dropped

    def stream(world, k):
        samplers = [iter(EpochBatchSampler(n, g, world, r, k, seed=3)) for r in range(world)]
        out = []
        for _ in range(8):  # two epochs of global batches
            out.append([i for s in samplers for _ in range(k) for i in next(s)])
        return out

    one = stream(1, 1)
    assert stream(2, 1) == one and stream(2, 3) == one and stream(3, 2) == one and stream(1, 4) == one
    first_epoch = [i for batch in one[:4] for i in batch]
    assert len(set(first_epoch)) == 48  # a permutation, minus the dropped tail
    assert one[:4] != one[4:]  # a fresh shuffle each epoch


def test_sampler_started_mid_stream_continues_it():
    full = iter(EpochBatchSampler(50, 12, 2, 1, 2, seed=0))
    seq = [(b.epoch, list(b)) for b in (next(full) for _ in range(20))]
    resumed = iter(EpochBatchSampler(50, 12, 2, 1, 2, seed=0, start_epoch=1, start_round=1))
    # epoch 1, round 1 is micro-batch (4 + 1) * 2 of this rank's stream
    assert [(b.epoch, list(b)) for b in (next(resumed) for _ in range(10))] == seq[10:20]


def test_items_depend_only_on_seed_epoch_and_index():
    data = SeededItems(Noisy(), seed=7)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    batch = data.__getitems__(BatchIndices([5, 9, 2], epoch=1))
    alone = data.__getitems__(BatchIndices([9], epoch=1))[0]
    other_epoch = data.__getitems__(BatchIndices([9], epoch=2))[0]
    assert torch.equal(batch[1]["image"], alone["image"]) and batch[1]["epoch"] == 1
    assert not torch.equal(alone["image"], other_epoch["image"]) and other_epoch["epoch"] == 2
    # loading data in the main process leaves the training stream (dropout) where it was
    assert torch.equal(torch.get_rng_state(), before[0])
    assert (np.random.get_state()[1] == before[1]).all() and random.getstate() == before[2]


def test_workers_draw_the_same_items_as_the_main_process():
    sampler = EpochBatchSampler(40, 8, 1, 0, 1, seed=1)
    main = DataLoader(SeededItems(Noisy(), 4), batch_sampler=sampler)
    workers = DataLoader(SeededItems(Noisy(), 4), batch_sampler=sampler, num_workers=2)
    a, b = iter(main), iter(workers)
    for _ in range(12):  # past an epoch boundary: the epoch reaches the workers' copies too
        x, y = next(a), next(b)
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["epoch"], y["epoch"])


@pytest.mark.parametrize("dataset", [Noisy, NoisyStream])
def test_stream_resumed_at_its_position_continues_exactly(dataset):
    kw = dict(global_batch=8, accum_steps=2, world_size=1, rank=0, seed=5)
    full = BatchStream(dataset(), **kw)
    consumed, saved_at = [], {}
    for step in range(1, 13):  # 5 steps an epoch: positions inside and at the end of epochs
        consumed += _take(full, 2)
        saved_at[step] = full.position()
    for step in (3, 5, 7):
        resumed = BatchStream(dataset(), **kw, position=saved_at[step])
        assert _ids(_take(resumed, 2 * (12 - step))) == _ids(consumed[2 * step :]), step
    # 40 items = 5 global batches an epoch; a stream of unknown length learns that an epoch ended
    # only when it asks for the next item
    at_end = {"epoch": 1, "samples_in_epoch": 0} if dataset is Noisy else {"epoch": 0, "samples_in_epoch": 40}
    assert saved_at[5] == at_end
    assert saved_at[7] == {"epoch": 1, "samples_in_epoch": 16}


def test_batch_layout_errors_name_the_fields():
    assert batch_layout(32, 2, 4) == 4
    with pytest.raises(ConfigError, match=r"train.batch_size 30 must be a multiple of processes x train.accum_steps"):
        batch_layout(30, 2, 4)
    with pytest.raises(ConfigError, match="train.accum_steps"):
        batch_layout(32, 1, 0)
    with pytest.raises(ConfigError, match="larger than the training set"):
        BatchStream(Noisy(4), global_batch=8, accum_steps=1, world_size=1, rank=0, seed=0)


@pytest.mark.slow
def test_training_on_an_iterable_dataset_resumes_exactly(tmp_path, monkeypatch):
    """The loop takes an IterableDataset (no length, no sampler) and resumes it by skipping."""
    from safetensors.torch import load_file

    import lipkit.train.loop as loop
    from lipkit.config import load_config
    from lipkit.data import build_train_dataset

    class AsStream(IterableDataset):
        def __init__(self, pairs):
            self.pairs, self.epoch = pairs, 0

        def set_epoch(self, epoch):
            self.pairs.set_epoch(epoch)
            self.epoch = epoch

        def possible_captions(self):
            return self.pairs.possible_captions()

        def __iter__(self):
            order = torch.randperm(len(self.pairs), generator=torch.Generator().manual_seed(self.epoch))
            return (self.pairs[i] for i in order.tolist())

    monkeypatch.setattr(loop, "build_train_dataset", lambda *a, **kw: AsStream(build_train_dataset(*a, **kw)))
    cfg = load_config("fashion-tiny", [
        "train.steps=8", "train.batch_size=32", "train.save_every_steps=3", "train.progress=false",
        "data.train_limit=96", "model.vision.width=32", "model.vision.layers=1", "model.vision.heads=2",
        "model.text.width=32", "model.text.layers=1", "model.text.heads=2", "model.embed_dim=16",
    ])
    loop.train(cfg, tmp_path / "full")
    loop.train(cfg, tmp_path / "resumed", resume=tmp_path / "full" / "checkpoints" / "step-00000003")
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
