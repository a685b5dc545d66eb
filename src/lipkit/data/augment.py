"""SimCLR's strong image augmentation, with PIL and numpy (core lipkit has no torchvision), and the
extra image views a training item carries (data.image_views).

`StrongAugment` follows the list SimCLR, SLIP and clip-rocket use, in their order: random resized
crop (area share `crop_scale`), colour jitter with probability `jitter_p` (brightness, contrast,
saturation, hue in a random order, each factor uniform in [1 - x, 1 + x], hue shift in [-h, h]
of a turn), grayscale with probability `grayscale_p`, Gaussian blur with probability `blur_p`
(radius uniform in `blur_sigma`, scaled by image size / 224 so that a 64 px image is blurred as a
224 px one would be), horizontal flip with probability `flip`. The adjustments are what
torchvision does to a PIL image (PIL's ImageEnhance; hue rotated in HSV).

Every random draw comes from the `random.Random` passed in, seeded per (seed, epoch, index, view)
by the datasets, so a view never depends on the worker, the number of workers or a resume.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from lipkit.config import DataConfig, StrongAugmentConfig

from .transforms import hflip, normalize, random_resized_crop, to_tensor

VIEW_STREAM = 200  # sample_hash stream of view v is VIEW_STREAM + v (2 is the first view's)


def _hue(img: Image.Image, shift: float) -> Image.Image:
    """Rotate the hue by `shift` of a turn in HSV, as torchvision's adjust_hue on a PIL image."""
    h, s, v = img.convert("HSV").split()
    rotated = (np.asarray(h, dtype=np.int16) + int(round(shift * 255))) % 256
    return Image.merge("HSV", (Image.fromarray(rotated.astype(np.uint8), "L"), s, v)).convert("RGB")


def color_jitter(img: Image.Image, rng: random.Random, strengths: tuple[float, float, float, float]) -> Image.Image:
    """Brightness, contrast, saturation and hue changes in a random order, each factor uniform in
    [1 - x, 1 + x] (hue: a shift in [-h, h]); saturation and hue leave a one-channel image as it is."""
    b, c, s, h = strengths
    ops: list[Callable[[Image.Image], Image.Image]] = []
    for enhancer, x in ((ImageEnhance.Brightness, b), (ImageEnhance.Contrast, c), (ImageEnhance.Color, s)):
        if x > 0 and (enhancer is not ImageEnhance.Color or img.mode == "RGB"):
            f = rng.uniform(max(0.0, 1 - x), 1 + x)
            ops.append(lambda im, e=enhancer, f=f: e(im).enhance(f))
    if h > 0 and img.mode == "RGB":
        shift = rng.uniform(-h, h)
        ops.append(lambda im, shift=shift: _hue(im, shift))
    rng.shuffle(ops)
    for op in ops:
        img = op(img)
    return img


@dataclass(frozen=True)
class StrongAugment:
    """PIL image (mode "L" or "RGB") -> augmented PIL image of `size` x `size`."""

    size: int
    cfg: StrongAugmentConfig

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        cfg = self.cfg
        img = random_resized_crop(img, self.size, rng, tuple(cfg.crop_scale))
        if rng.random() < cfg.jitter_p:
            img = color_jitter(img, rng, tuple(cfg.jitter))
        if rng.random() < cfg.grayscale_p and img.mode == "RGB":
            img = img.convert("L").convert("RGB")
        if rng.random() < cfg.blur_p:
            radius = rng.uniform(*cfg.blur_sigma) * self.size / 224
            img = img.filter(ImageFilter.GaussianBlur(radius=radius))
        if rng.random() < cfg.flip:
            img = hflip(img)
        return img


@dataclass(frozen=True)
class ViewTransform:
    """The transform of views 2..N: the strong augmentation (or the first view's own transform,
    view_augment: same) then to a normalised tensor."""

    augment: StrongAugment
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def mode(self) -> str:
        return "RGB" if len(self.mean) == 3 else "L"

    def __call__(self, img: Image.Image, rng: random.Random) -> torch.Tensor:
        if img.mode != self.mode:
            img = img.convert(self.mode)
        return normalize(to_tensor(self.augment(img, rng)), self.mean, self.std)


def check_views(data: DataConfig) -> None:
    """One-line ConfigErrors for the view and augmentation settings."""
    from lipkit.config import ConfigError

    a = data.strong_augment
    checks = (
        ("image_views", data.image_views, data.image_views >= 0, ">= 0 (0: what the objective needs)"),
        ("strong_augment.crop_scale", a.crop_scale,
         len(a.crop_scale) == 2 and 0 < a.crop_scale[0] <= a.crop_scale[1] <= 1, "two numbers, 0 < min <= max <= 1"),
        ("strong_augment.jitter", a.jitter, len(a.jitter) == 4 and all(0 <= x for x in a.jitter) and a.jitter[3] <= 0.5,
         "four numbers >= 0 (brightness, contrast, saturation, hue <= 0.5)"),
        ("strong_augment.blur_sigma", a.blur_sigma, len(a.blur_sigma) == 2 and 0 <= a.blur_sigma[0] <= a.blur_sigma[1],
         "two numbers, 0 <= min <= max"),
        *((f"strong_augment.{k}", getattr(a, k), 0 <= getattr(a, k) <= 1, "in [0, 1]")
          for k in ("flip", "jitter_p", "grayscale_p", "blur_p")),
    )
    for key, value, ok, rule in checks:
        if not ok:
            raise ConfigError(f"data.{key}: must be {rule}, got {value}")


class ViewMaker:
    """Views 2..N of a training image, each from its own generator (seed, epoch, index, view)."""

    def __init__(self, views: int, transform: Callable[[Image.Image, random.Random], torch.Tensor]):
        self.extra = views - 1
        self.transform = transform

    def __call__(self, img: Image.Image, rng_of: Callable[[int], random.Random]) -> torch.Tensor:
        """[views - 1, C, H, W]; `rng_of(v)` is view v's generator (v = 1 .. views - 1)."""
        return torch.stack([self.transform(img, rng_of(v)) for v in range(1, self.extra + 1)])


def view_maker(data: DataConfig, size: int, mean, std, first_view=None) -> ViewMaker | None:
    """The maker of a run's extra views, or None with data.image_views = 1. `first_view`: the
    first view's transform (an ImageTransform), used for view_augment: same."""
    check_views(data)
    if data.image_views <= 1:
        return None
    if data.view_augment == "same" and first_view is not None:
        return ViewMaker(data.image_views, lambda img, rng: first_view(img, rng if first_view.random else None))
    return ViewMaker(data.image_views, ViewTransform(StrongAugment(size, data.strong_augment), tuple(mean), tuple(std)))



class TrainingAugment:
    """What a training dataset adds to each item: its extra image views and its augmented caption,
    each from a generator seeded by (seed, epoch, key, stream); `key` is the item's index (a
    shard sample's key hash)."""

    def __init__(self, seed: int, views: ViewMaker | None = None, text=None):
        self.seed, self.views, self.text = seed, views, text  # text: a TextAugmenter, or None

    def rng(self, epoch: int, key: int, stream: int) -> random.Random:
        from .pairs import sample_hash

        return random.Random(sample_hash(self.seed, epoch, key, stream))

    def extra_views(self, img: Image.Image, epoch: int, key: int) -> torch.Tensor:
        return self.views(img, lambda v: self.rng(epoch, key, VIEW_STREAM + v))

    def caption(self, caption: str, epoch: int, key: int) -> str:
        if self.text is None:
            return caption
        from .text_augment import TEXT_STREAM

        return self.text(caption, self.rng(epoch, key, TEXT_STREAM))

    def apply(self, item: dict, img: Image.Image, epoch: int, key: int) -> dict:
        """`item` with "views" [views - 1, C, H, W] (when there are extra views) and its caption augmented."""
        if self.views is not None:
            item["views"] = self.extra_views(img, epoch, key)
        item["caption"] = self.caption(item["caption"], epoch, key)
        return item
