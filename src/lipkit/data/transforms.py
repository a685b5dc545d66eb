"""Image transforms written with PIL and torch (torchvision has no CPU build here).

Each function follows torchvision's definition, so numbers match what users know:
- `resize_shorter(img, s)`: shorter side to s, longer side to int(s * long / short);
- `center_crop(img, s)`: offsets int(round((W - s) / 2)), int(round((H - s) / 2)); an image
  smaller than the crop is padded with the fill colour first;
- `random_resized_crop_box`: 10 tries of area ~ U(scale)·H·W and log-aspect ~ U(log ratio), else
  the centred box of the clamped aspect ratio;
- `to_tensor`: uint8 H×W×C -> float C×H×W in [0, 1]; `normalize`: (x - mean) / std per channel.

`ImageTransform` chains them for training (random crop, optional flip) or evaluation (resize the
shorter side, centre crop). Randomness comes from a `random.Random` passed per call, so a sample's
augmentation depends only on (seed, epoch, index), never on worker scheduling.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

BICUBIC = Image.Resampling.BICUBIC


def resize_shorter(img: Image.Image, size: int, resample=BICUBIC) -> Image.Image:
    w, h = img.size
    if min(w, h) == size:
        return img
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    return img.resize((new_w, new_h), resample=resample)


def center_crop(img: Image.Image, size: int, fill: int | tuple[int, ...] = 0) -> Image.Image:
    w, h = img.size
    if w < size or h < size:
        padded = Image.new(img.mode, (max(w, size), max(h, size)), fill)
        padded.paste(img, ((max(w, size) - w) // 2, (max(h, size) - h) // 2))
        img, (w, h) = padded, padded.size
    left = int(round((w - size) / 2.0))
    top = int(round((h - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def random_resized_crop_box(
    width: int, height: int, rng: random.Random,
    scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop covering a random share `scale` of the area with a random
    aspect ratio within `ratio` (log-uniform)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(img: Image.Image, size: int, rng: random.Random, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3), resample=BICUBIC) -> Image.Image:
    top, left, h, w = random_resized_crop_box(img.width, img.height, rng, scale, ratio)
    return img.resize((size, size), resample=resample, box=(left, top, left + w, top + h))


def hflip(img: Image.Image) -> Image.Image:
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def to_tensor(img: Image.Image) -> torch.Tensor:
    a = np.asarray(img, dtype=np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(a.transpose(2, 0, 1).copy()).float().div_(255.0)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=x.dtype).reshape(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype).reshape(-1, 1, 1)
    return (x - m) / s


@dataclass(frozen=True)
class ImageTransform:
    """PIL image -> normalised FloatTensor [channels, size, size].

    `crop="center"`: resize the shorter side to `size`, centre crop (deterministic; the
    evaluation transform, and the training one when augmentation is off). `crop="random"`:
    random resized crop with `scale`. `flip`: horizontal flip with probability 1/2."""

    size: int
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    crop: str = "center"
    scale: tuple[float, float] = (0.5, 1.0)
    flip: bool = False

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"image size must be >= 1, got {self.size}")
        if self.crop not in ("center", "random"):
            raise ValueError(f"crop must be 'center' or 'random', got {self.crop!r}")
        if len(self.mean) != len(self.std) or len(self.mean) not in (1, 3):
            raise ValueError(f"mean and std need 1 or 3 values each, got {self.mean} and {self.std}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {self.scale}")

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def mode(self) -> str:
        return "RGB" if self.channels == 3 else "L"

    @property
    def random(self) -> bool:
        """Whether the output depends on the rng (then cached features would be wrong)."""
        return self.crop == "random" or self.flip

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        if img.mode != self.mode:
            img = img.convert(self.mode)
        if self.random and rng is None:
            raise ValueError("a random transform needs an rng")
        if self.crop == "random":
            img = random_resized_crop(img, self.size, rng, self.scale)
        else:
            img = center_crop(resize_shorter(img, self.size), self.size)
        if self.flip and rng.random() < 0.5:
            img = hflip(img)
        return normalize(to_tensor(img), self.mean, self.std)

    def for_eval(self) -> ImageTransform:
        """The same size and normalisation without randomness."""
        return ImageTransform(self.size, self.mean, self.std)
