"""The strong training recipe's parts (Fini et al. 2023): image views through SimCLR's strong
augmentation, EDA text augmentation, label smoothing, and the `recipe: strong` layer. Each is
checked against its definition; views and captions are seeded per (seed, epoch, index, view), so
they do not depend on workers, and a resumed run stays bitwise exact (2-process parity of label
smoothing and multi-view CLIP: tests/test_objectives_distributed.py)."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from lipkit.config import ConfigError, DataConfig, StrongAugmentConfig, TextAugmentConfig, VisionConfig, load_config
from lipkit.data.augment import StrongAugment, color_jitter
from lipkit.data.sources import build_train_dataset
from lipkit.data.text_augment import TextAugmenter, _words_of_synsets, wordnet_synonyms
from lipkit.objectives.clip import ClipBatch, info_nce


# ------------------------------------------------------------------ image augmentation
def _photo(size=(40, 48)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))


def test_strong_augment_is_a_function_of_its_generator():
    aug = StrongAugment(24, StrongAugmentConfig())
    a, b, c = (np.asarray(aug(_photo(), random.Random(s))) for s in (5, 5, 6))
    assert a.shape == (24, 24, 3) and np.array_equal(a, b) and not np.array_equal(a, c)


def test_strong_augment_steps_each_happen_at_their_probability():
    base = StrongAugmentConfig(crop_scale=[1.0, 1.0], flip=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    img = _photo((24, 24))
    assert np.array_equal(np.asarray(StrongAugment(24, base)(img, random.Random(0))), np.asarray(img))
    gray = StrongAugmentConfig(**{**base.__dict__, "grayscale_p": 1.0})
    out = np.asarray(StrongAugment(24, gray)(img, random.Random(0))).astype(int)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    flip = StrongAugmentConfig(**{**base.__dict__, "flip": 1.0})
    assert np.array_equal(np.asarray(StrongAugment(24, flip)(img, random.Random(0))), np.asarray(img)[:, ::-1])
    # radius 20 at 224 px is about 2 px at 24: blur removes most of the pixel noise
    blur = StrongAugmentConfig(**{**base.__dict__, "blur_p": 1.0, "blur_sigma": [20.0, 20.0]})
    blurred = np.asarray(StrongAugment(24, blur)(img, random.Random(0))).astype(float)
    assert blurred.std() < np.asarray(img).astype(float).std() * 0.5


def test_color_jitter_matches_its_definitions():
    img = _photo((16, 16))
    a = np.asarray(img).astype(float)
    # brightness alone with factor f blends with black: round(f * x), clipped
    rng = random.Random(3)
    f = random.Random(3).uniform(0.6, 1.4)
    got = np.asarray(color_jitter(img, rng, (0.4, 0, 0, 0))).astype(float)
    np.testing.assert_allclose(got, np.clip(np.round(f * a), 0, 255), atol=1)
    # a full turn of hue is the identity up to HSV rounding; saturation 0 is the greyscale image
    gray = np.asarray(img.convert("L")).astype(float)
    desat = np.asarray(color_jitter(img, _FixedUniform(0.0), (0, 0, 1.0, 0))).astype(float)
    np.testing.assert_allclose(desat, np.repeat(gray[..., None], 3, -1), atol=1)


class _FixedUniform(random.Random):
    """A generator whose uniform() returns one value (to pin a jitter factor)."""

    def __init__(self, value: float):
        super().__init__(0)
        self.value = value

    def uniform(self, a, b):
        return self.value


# ------------------------------------------------------------------ views in the datasets
def _views_cfg(views=3, **kw) -> DataConfig:
    return DataConfig(source="digits", image_views=views, image_mean=[0.5], image_std=[0.5], **kw)


def test_pair_items_carry_seeded_views():
    ds = build_train_dataset(_views_cfg(), seed=7, vision=VisionConfig(image_size=8, channels=1))
    a, b = ds[3], ds[3]
    assert a["image"].shape == (1, 8, 8) and a["views"].shape == (2, 1, 8, 8)
    assert torch.equal(a["views"], b["views"])
    assert not torch.equal(a["views"][0], a["views"][1])  # each view its own draw
    ds.set_epoch(1)
    assert not torch.equal(ds[3]["views"], a["views"])  # a new epoch, new views
    other_seed = build_train_dataset(_views_cfg(), seed=8, vision=VisionConfig(image_size=8, channels=1))
    assert not torch.equal(other_seed[3]["views"], a["views"])


def test_views_do_not_depend_on_the_worker():
    from lipkit.train.batches import BatchIndices, SeededItems

    ds = build_train_dataset(_views_cfg(text_augment=TextAugmentConfig(enabled=True)), seed=1,
                             vision=VisionConfig(image_size=8, channels=1))
    items = SeededItems(ds, seed=1)
    batches = [BatchIndices([5, 9, 2, 11], 2), BatchIndices([0, 1, 3, 4], 2)]
    here = [items.__getitems__(b) for b in batches]
    loader = DataLoader(items, batch_sampler=batches, num_workers=2, collate_fn=lambda x: x)
    there = list(loader)
    for mine, theirs in zip(here, there):
        for x, y in zip(mine, theirs):
            assert torch.equal(x["views"], y["views"]) and x["caption"] == y["caption"]


def test_native_fashion_mnist_items_get_views_with_its_statistics():
    from lipkit.data import fashion_mnist

    cfg = DataConfig(source="fashion-mnist", image_views=2, train_limit=64)
    ds = build_train_dataset(cfg, seed=0, vision=VisionConfig(image_size=28, channels=1, patch_size=7))
    item = ds[5]
    assert item["image"].shape == (1, 28, 28) and item["views"].shape == (1, 1, 28, 28)
    # the view is normalised as the native tensors are: its pixels come from the same range
    low, high = (0 - fashion_mnist.MEAN) / fashion_mnist.STD, (1 - fashion_mnist.MEAN) / fashion_mnist.STD
    assert low - 1e-5 <= item["views"].min() and item["views"].max() <= high + 1e-5
    assert torch.equal(ds.__getitems__([5])[0]["views"], item["views"])


def test_view_settings_are_checked_in_one_line():
    bad = [("image_views", -1), ("strong_augment", StrongAugmentConfig(crop_scale=[0.5, 0.2])),
           ("strong_augment", StrongAugmentConfig(blur_p=1.5))]
    for key, value in bad:
        cfg = _views_cfg()
        setattr(cfg, key, value)
        with pytest.raises(ConfigError, match=rf"data\.{key}"):
            build_train_dataset(cfg, vision=VisionConfig(image_size=8, channels=1))


def test_a_cached_feature_run_refuses_views():
    from lipkit.data.feature_cache import cacheable

    ds = build_train_dataset(_views_cfg(), vision=VisionConfig(image_size=8, channels=1))
    assert "data.image_views" in cacheable(ds)


# ------------------------------------------------------------------ text augmentation
SYNONYMS = {"bag": ("sack", "pouch"), "photo": ("picture",), "small": ("little",)}


def _eda(**kw) -> TextAugmenter:
    cfg = TextAugmentConfig(**{"enabled": True, "synonym_p": 0, "insert_p": 0, "swap_p": 0, "delete_p": 0, **kw})
    return TextAugmenter(cfg, synonyms=SYNONYMS)


def test_each_eda_operation_does_what_it_says():
    caption = "a small photo of a bag ."
    assert _eda()(caption, random.Random(0)) == caption
    kept = 0
    for seed in range(20):
        swapped = _eda(swap_p=1, rate=0.2)(caption, random.Random(seed)).split()
        assert Counter(swapped) == Counter(caption.split())
        deleted = _eda(delete_p=1, rate=0.5)(caption, random.Random(seed)).split()
        rest = iter(caption.split())
        assert deleted and all(w in rest for w in deleted)  # the kept words, in their order
        kept += len(deleted)
        replaced = _eda(synonym_p=1, rate=0.5)(caption, random.Random(seed)).split()
        changed = [(a, b) for a, b in zip(caption.split(), replaced) if a != b]
        assert len(changed) == 3 and all(b in SYNONYMS[a] for a, b in changed)  # round(0.5 * 7) = 4, only 3 have one
        inserted = _eda(insert_p=1, rate=0.3)(caption, random.Random(seed)).split()
        extra = Counter(inserted) - Counter(caption.split())
        assert sum(extra.values()) == 2 and all(any(w in s for s in SYNONYMS.values()) for w in extra)
    assert 40 <= kept <= 100  # each word dropped with probability 0.5: 70 of 140 expected
    assert _eda(swap_p=1)(caption, random.Random(1)) == _eda(swap_p=1)(caption, random.Random(1))


def test_stop_words_keep_their_place():
    out = _eda(synonym_p=1, rate=1.0)("the a of", random.Random(0))
    assert out == "the a of"


def test_wordnet_data_files_are_read_as_synsets(tmp_path):
    data = ("  1 This software and database is being provided\n"
            "00001740 03 n 02 bag 0 sack 1 003 ~ 00001930 n 0000 | a container\n"
            "00001750 03 n 03 Photo 0 photograph 0 exposure 0 000 | a picture\n"
            "00001760 00 a 02 galore(ip) 0 aplenty 0 000 | in abundance\n")
    (tmp_path / "data.noun").write_text(data)
    for pos in ("verb", "adj", "adv"):
        (tmp_path / f"data.{pos}").write_text("")
    assert _words_of_synsets(tmp_path / "data.noun") == [["bag", "sack"], ["photo", "photograph", "exposure"],
                                                         ["galore", "aplenty"]]
    table = wordnet_synonyms(tmp_path)
    assert table["bag"] == ("sack",) and table["photo"] == ("exposure", "photograph")
    assert wordnet_synonyms(tmp_path / "absent") is None


def test_text_augment_settings_are_checked():
    with pytest.raises(ConfigError, match=r"data\.text_augment\.swap_p"):
        TextAugmenter(TextAugmentConfig(enabled=True, swap_p=2.0), synonyms={})


# ------------------------------------------------------------------ label smoothing
def test_label_smoothing_matches_its_formula():
    g = torch.Generator().manual_seed(0)
    img, txt = (F.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=-1) for _ in range(2))
    scale, eps, n = torch.tensor(7.0, dtype=torch.float64), 0.1, 6
    batch = ClipBatch(img, txt, img, txt, scale, 0)
    target = (1 - eps) * torch.eye(n, dtype=torch.float64) + eps / n

    def smoothed_ce(logits):
        return -(target * logits.log_softmax(-1)).sum(-1).mean()

    expected = (smoothed_ce(scale * img @ txt.T) + smoothed_ce(scale * txt @ img.T)) / 2
    torch.testing.assert_close(info_nce(batch, label_smoothing=eps), expected)
    aligned = ClipBatch(img, img, img, img, torch.tensor(50.0, dtype=torch.float64), 0)
    assert info_nce(aligned, label_smoothing=eps) > info_nce(aligned) + 0.5  # confident and right pays for eps


# ------------------------------------------------------------------ the recipe layer
def test_the_strong_recipe_layer_lies_under_the_run_settings():
    basic = load_config("fashion-tiny")
    strong = load_config("fashion-tiny", ["recipe=strong"])
    assert basic.recipe == "basic" and basic.data.image_views == 0 and basic.objective.clip.label_smoothing == 0
    assert strong.data.image_views == 2 and strong.data.text_augment.enabled
    assert strong.objective.clip.label_smoothing == 0.1 and strong.objective.clip.views == "all"
    assert load_config("fashion-tiny", ["recipe=strong", "objective.clip.label_smoothing=0"]) \
        .objective.clip.label_smoothing == 0  # the run's own setting wins
    with pytest.raises(ConfigError, match=r"recipe: unknown recipe 'stronger'; recipes: basic, strong"):
        load_config("fashion-tiny", ["recipe=stronger"])


# ------------------------------------------------------------------ resume
RESUME_ARGS = [
    "--config", "fashion-tiny",
    *(f"--set={s}" for s in [
        "recipe=strong", "objective.name=slip", "data.image_views=3", "data.train_limit=320",
        "train.steps=12", "train.save_every_steps=4", "train.batch_size=64", "train.accum_steps=2",
        "train.warmup_steps=2", "train.progress=false", "train.threads=1",
        "model.vision.width=32", "model.vision.layers=1", "model.vision.heads=2",
        "model.text.width=32", "model.text.layers=1", "model.text.heads=2", "model.embed_dim=32",
        "model.ssl.hidden_dim=64", "model.ssl.out_dim=16",
    ]),
]


@pytest.mark.slow
def test_resume_with_views_and_text_augment_is_bitwise_exact(tmp_path):
    def train(*extra):
        done = subprocess.run([sys.executable, "-m", "lipkit", "train", *RESUME_ARGS, *extra],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-3000:]

    train("--out", str(tmp_path / "whole"))
    # from the step-4 checkpoint, with a data-loader worker this time
    train("--out", str(tmp_path / "resumed"), "--resume", str(tmp_path / "whole" / "checkpoints" / "step-00000004"),
          "--set=data.num_workers=1")
    for name in ("model.safetensors", "objective.safetensors"):
        a, b = load_file(tmp_path / "whole" / name), load_file(tmp_path / "resumed" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
