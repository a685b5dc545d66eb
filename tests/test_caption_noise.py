"""data.caption_noise: loosely paired captions, drawn by (seed, epoch, index)."""
import math

import pytest

from lipkit.config import ConfigError, DataConfig, VisionConfig
from lipkit.data import FashionMNISTPairs, build_train_dataset
from lipkit.data.captions import fill
from lipkit.data.pairs import PairDataset, PairRecord
from lipkit.data.sources import build_pairs


def _named_class(ds: FashionMNISTPairs, caption: str) -> int:
    (cls,) = [c for c, name in enumerate(ds.class_names) if caption in {fill(t, name) for t in ds.templates}]
    return cls


def _replaced(ds: FashionMNISTPairs, n: int) -> list[int]:
    labels = ds.labels[:n].tolist()
    return [i for i in range(n) if _named_class(ds, ds.caption(i)) != labels[i]]


def test_fashion_mnist_share_of_replaced_captions_and_they_name_another_class():
    n, p = 20000, 0.3
    ds = build_train_dataset(DataConfig(caption_noise=p, train_limit=n), seed=3)
    replaced = _replaced(ds, n)
    assert abs(len(replaced) / n - p) < 4 * math.sqrt(p * (1 - p) / n)  # binomial, 4 standard deviations
    # every class is a replacement target about equally often (1/9 of each class's replaced items)
    ds.set_epoch(1)
    again = _replaced(ds, n)
    assert abs(len(again) / n - p) < 4 * math.sqrt(p * (1 - p) / n)
    overlap = len(set(replaced) & set(again)) / n  # drawn anew each epoch: overlap ~ p^2
    assert abs(overlap - p * p) < 0.02
    assert ds[replaced[0]]["label"] == int(ds.labels[replaced[0]])  # the image keeps its own label


def test_noise_zero_changes_nothing_and_a_fresh_dataset_draws_the_same_captions():
    clean = FashionMNISTPairs("train", limit=500, seed=1)
    assert _replaced(clean, 500) == []
    a = FashionMNISTPairs("train", limit=500, seed=1, caption_noise=0.5)
    b = FashionMNISTPairs("train", limit=500, seed=1, caption_noise=0.5)  # e.g. a resumed run, a worker
    for ds in (a, b):
        ds.set_epoch(4)
    assert [a.caption(i) for i in range(500)] == [b.caption(i) for i in range(500)]
    c = FashionMNISTPairs("train", limit=500, seed=2, caption_noise=0.5)
    c.set_epoch(4)
    assert [a.caption(i) for i in range(500)] != [c.caption(i) for i in range(500)]


class _Labelled(PairDataset):
    has_labels = True


def test_labelled_pair_sources_borrow_a_caption_of_another_class():
    records = [PairRecord(f"img{i}", (f"class {i % 4} caption {i}",), i % 4) for i in range(4000)]
    ds = _Labelled(records, transform=None, seed=0, name="toy")
    ds.set_caption_noise(0.25)
    borrowed = 0
    for i, r in enumerate(records):
        caption = ds.caption(i)
        if caption != r.captions[0]:
            borrowed += 1
            donor_class = int(caption.split()[1])
            assert donor_class != r.label
    assert abs(borrowed / 4000 - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 4000)


def test_caption_noise_needs_labels_and_a_sane_share():
    unlabelled = PairDataset([PairRecord("a", ("x",)), PairRecord("b", ("y",))], transform=None, name="my.csv")
    with pytest.raises(ValueError, match="my.csv: data.caption_noise needs class labels"):
        unlabelled.set_caption_noise(0.1)
    with pytest.raises(ConfigError, match=r"data.caption_noise: must lie in \[0, 1\]"):
        build_train_dataset(DataConfig(caption_noise=1.5))
    digits = build_pairs(DataConfig(source="digits", caption_noise=0.2), VisionConfig(image_size=8, channels=3))
    assert digits.caption_noise == 0.2
