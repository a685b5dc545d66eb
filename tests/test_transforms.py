"""Transforms written with PIL and torch, against outputs computed by hand."""
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from lipkit.data.transforms import (
    ImageTransform,
    center_crop,
    hflip,
    normalize,
    random_resized_crop,
    random_resized_crop_box,
    resize_shorter,
    to_tensor,
)


def grid_image(w: int, h: int) -> Image.Image:
    """Grey image whose pixel (x, y) holds 10*y + x: every value says where it came from."""
    a = (10 * np.arange(h)[:, None] + np.arange(w)[None, :]).astype(np.uint8)
    return Image.fromarray(a, mode="L")


def test_resize_shorter_sizes():
    # torchvision's rule: shorter side to s, longer to int(s * long / short) (truncated)
    assert resize_shorter(Image.new("RGB", (300, 200)), 100).size == (150, 100)
    assert resize_shorter(Image.new("RGB", (200, 300)), 100).size == (100, 150)
    assert resize_shorter(Image.new("RGB", (333, 100)), 64).size == (213, 64)  # 64*3.33 = 213.12
    assert resize_shorter(Image.new("RGB", (7, 9)), 224).size == (224, 288)  # 224*9/7 = 288
    img = Image.new("RGB", (50, 80))
    assert resize_shorter(img, 50) is img  # already the right size: untouched


def test_center_crop_offsets_by_hand():
    img = grid_image(7, 5)
    out = np.asarray(center_crop(img, 3))
    # left = round((7-3)/2) = 2, top = round((5-3)/2) = 1
    expected = np.array([[12, 13, 14], [22, 23, 24], [32, 33, 34]], dtype=np.uint8)
    np.testing.assert_array_equal(out, expected)
    # odd difference: left = int(round(1 / 2)) = 0 (round half to even), top = int(round(3 / 2)) = 2
    out = np.asarray(center_crop(grid_image(4, 6), 3))
    np.testing.assert_array_equal(out, np.array([[20, 21, 22], [30, 31, 32], [40, 41, 42]], dtype=np.uint8))


def test_center_crop_pads_small_images():
    img = Image.fromarray(np.full((2, 2), 200, np.uint8), mode="L")
    out = np.asarray(center_crop(img, 4, fill=7))
    expected = np.full((4, 4), 7, np.uint8)
    expected[1:3, 1:3] = 200
    np.testing.assert_array_equal(out, expected)


def test_hflip_and_to_tensor_and_normalize():
    img = grid_image(3, 2)
    np.testing.assert_array_equal(np.asarray(hflip(img)), np.array([[2, 1, 0], [12, 11, 10]], dtype=np.uint8))
    rgb = Image.fromarray(np.array([[[255, 0, 51]]], dtype=np.uint8))
    t = to_tensor(rgb)
    assert t.shape == (3, 1, 1) and t.dtype == torch.float32
    assert t[:, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.2])
    n = normalize(t, (0.5, 0.5, 0.5), (0.5, 0.25, 0.5))
    assert n[:, 0, 0].tolist() == pytest.approx([1.0, -2.0, -0.6])
    assert to_tensor(grid_image(3, 2)).shape == (1, 2, 3)


def test_random_resized_crop_box_follows_the_rule():
    rng = random.Random(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(100, 60, rng, scale=(0.2, 0.9), ratio=(0.5, 2.0))
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 100
        assert 0.2 * 6000 * 0.8 <= h * w <= 0.9 * 6000 * 1.2  # rounding of w and h aside
        assert 0.5 * 0.8 <= w / h <= 2.0 * 1.25
    # reproducible: the same seed gives the same boxes
    a = [random_resized_crop_box(100, 60, random.Random(5)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


def test_random_resized_crop_fallback_is_the_centred_clamped_box():
    class Never(random.Random):  # every try asks for more area than the image has
        def uniform(self, a, b):
            return b if b > 1 else math.log(4.0)

    # a 100x10 image is wider than ratio 4/3 allows: h = 10, w = round(10 * 4/3) = 13, centred
    assert random_resized_crop_box(100, 10, Never(), scale=(1.0, 1.0)) == (0, (100 - 13) // 2, 10, 13)
    # a 10x100 image is taller than 3/4: w = 10, h = round(10 / (3/4)) = 13
    assert random_resized_crop_box(10, 100, Never(), scale=(1.0, 1.0)) == ((100 - 13) // 2, 0, 13, 10)


def test_random_resized_crop_output_is_the_box_resized():
    img = grid_image(20, 20)
    rng_a, rng_b = random.Random(3), random.Random(3)
    out = random_resized_crop(img, 8, rng_a, scale=(0.3, 0.6))
    top, left, h, w = random_resized_crop_box(20, 20, rng_b, scale=(0.3, 0.6))
    ref = img.crop((left, top, left + w, top + h)).resize((8, 8), Image.Resampling.BICUBIC)
    assert out.size == (8, 8)
    np.testing.assert_allclose(np.asarray(out, dtype=int), np.asarray(ref, dtype=int), atol=1)


def test_image_transform_eval_by_hand():
    # 6x4 RGB, shorter side already 4: no resize; centre crop 4 takes columns 1..4
    a = np.zeros((4, 6, 3), np.uint8)
    a[:, :, 0] = np.arange(6)[None, :] * 50  # red ramp along x
    a[:, :, 2] = 255
    tf = ImageTransform(4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = tf(Image.fromarray(a))
    assert x.shape == (3, 4, 4)
    expected_red = (np.array([50, 100, 150, 200]) / 255 - 0.5) / 0.5
    np.testing.assert_allclose(x[0, 2].numpy(), expected_red, atol=1e-6)
    assert torch.all(x[1] == -1.0) and torch.all(x[2] == 1.0)
    assert not tf.random and tf.channels == 3


def test_image_transform_grey_and_modes():
    tf = ImageTransform(2, mean=(0.0,), std=(1.0,))
    x = tf(Image.fromarray(np.full((2, 2, 3), 102, np.uint8)))  # RGB converted to L
    assert x.shape == (1, 2, 2) and torch.allclose(x, torch.full((1, 2, 2), 0.4))


def test_image_transform_training_randomness_is_seeded():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    tf = ImageTransform(16, crop="random", flip=True, scale=(0.3, 1.0))
    assert tf.random
    a = tf(img, random.Random(11))
    b = tf(img, random.Random(11))
    c = tf(img, random.Random(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="rng"):
        tf(img)
    assert not tf.for_eval().random


def test_flip_happens_half_the_time():
    img = grid_image(4, 4).convert("RGB")
    tf = ImageTransform(4, flip=True)
    plain = ImageTransform(4)(img)
    flips = sum(not torch.equal(tf(img, random.Random(s)), plain) for s in range(400))
    assert 160 < flips < 240


@pytest.mark.parametrize("kwargs", [dict(size=0), dict(size=4, crop="zoom"), dict(size=4, mean=(0.5,), std=(0.5, 0.5)),
                                    dict(size=4, std=(0.5, 0.0, 0.5)), dict(size=4, scale=(0.0, 1.0))])
def test_bad_transform_settings(kwargs):
    with pytest.raises(ValueError):
        ImageTransform(**kwargs)
