"""Cut-outs pasted onto cluttered backgrounds, with the foreground mask known exactly.

On a plain cut-out on white, "every non-white pixel" is a perfect foreground mask, so localising
the object there proves nothing. A composite pastes a cut-out (an RGBA image, e.g. a Tux Paint
stamp) onto a busy background; the mask is where the pasted alpha exceeds half (`MASK_ALPHA`).
Backgrounds, by name:

- `noise`: colour noise summed over three scales (blobs of 1/4, 1/8 and 1/16 of the side) plus
  fine grain;
- `fashion-mnist`: a 3 × 3 mosaic of Fashion-MNIST test images, each tinted with its own colour;
- `openclipart`: a 2 × 2 mosaic of crops of Open Clip Art drawings, each on its own colour.

Composite `i` is made from cut-out `i // per_image` on background kind `i % len(backgrounds)`;
its scale (the cut-out's longer side is 45–80% of the canvas), position and background come from
a generator seeded with (seed, i), so the set is the same in every run and every process, and
any image can be made alone (nothing is held but the cut-outs' paths and the background sources).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .images import BadSampleError

MASK_ALPHA = 128  # a pixel is foreground when the pasted alpha is at least this
BACKGROUNDS = ("noise", "fashion-mnist", "openclipart")
SCALE = (0.45, 0.8)  # the cut-out's longer side, as a share of the canvas side


@dataclass(frozen=True)
class Composite:
    image: Image.Image  # RGB, size x size
    mask: np.ndarray  # bool [size, size]: the pasted cut-out's alpha >= MASK_ALPHA
    alpha: np.ndarray  # uint8 [size, size]: the pasted alpha (0 outside the cut-out)
    name: str  # "<cut-out name>@<background>#<i>"


def rgba(image: Image.Image) -> Image.Image:
    """The image as RGBA, cropped to the bounding box of its visible pixels."""
    image = image.convert("RGBA")
    box = image.getchannel("A").getbbox()
    return image.crop(box) if box else image


def _noise(rng: np.random.Generator, size: int) -> Image.Image:
    canvas = np.zeros((size, size, 3))
    for cells, weight in ((4, 1.0), (8, 0.6), (16, 0.35)):
        small = Image.fromarray(rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8))
        canvas += weight * np.asarray(small.resize((size, size), Image.Resampling.BICUBIC), dtype=float)
    canvas = canvas / 1.95 + rng.normal(0, 12, canvas.shape)
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def _mosaic(tiles: list[Image.Image], per_side: int, size: int) -> Image.Image:
    canvas = Image.new("RGB", (size, size))
    edges = np.linspace(0, size, per_side + 1).round().astype(int)
    for n, tile in enumerate(tiles):
        r, c = divmod(n, per_side)
        box = (int(edges[c]), int(edges[r]), int(edges[c + 1]), int(edges[r + 1]))
        canvas.paste(tile.resize((box[2] - box[0], box[3] - box[1]), Image.Resampling.BILINEAR), box[:2])
    return canvas


def _tint(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(40, 256, 3).astype(float) / 255


class Backgrounds:
    """Makes background images by kind; sources are read on first use."""

    def __init__(self, kinds: Sequence[str], fashion: Callable[[], np.ndarray] | None = None,
                 clipart: Callable[[], list[Path]] | None = None):
        unknown = [k for k in kinds if k not in BACKGROUNDS]
        if unknown or not kinds:
            raise ValueError(f"unknown background(s) {unknown or '(none given)'}; available: {', '.join(BACKGROUNDS)}")
        self.kinds = tuple(kinds)
        self._fashion_source, self._clipart_source = fashion, clipart
        self._fashion: np.ndarray | None = None
        self._clipart: list[Path] | None = None

    def fashion_images(self) -> np.ndarray:
        if self._fashion is None:
            if self._fashion_source is None:
                from .fashion_mnist import load_fashion_mnist

                self._fashion = load_fashion_mnist("test")[0]
            else:
                self._fashion = self._fashion_source()
        return self._fashion

    def clipart_images(self) -> list[Path]:
        if self._clipart is None:
            if self._clipart_source is None:
                from .openclipart import load_openclipart

                self._clipart = [it.image for it in load_openclipart()]
            else:
                self._clipart = self._clipart_source()
        return self._clipart

    def make(self, kind: str, rng: np.random.Generator, size: int) -> Image.Image:
        if kind == "noise":
            return _noise(rng, size)
        if kind == "fashion-mnist":
            images = self.fashion_images()
            tiles = []
            for _ in range(9):
                grey = images[int(rng.integers(len(images)))].astype(float) / 255
                tiles.append(Image.fromarray((grey[..., None] * _tint(rng) * 255).astype(np.uint8)))
            return _mosaic(tiles, 3, size)
        paths = self.clipart_images()
        tiles = []
        for _ in range(4):
            path = paths[int(rng.integers(len(paths)))]
            try:
                with Image.open(path) as im:
                    drawing = rgba(im)
            except OSError as e:
                raise BadSampleError(str(path), f"cannot read the background drawing ({e})") from None
            w, h = drawing.size
            side = max(1, int(min(w, h) * rng.uniform(0.5, 1.0)))
            left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            colour = tuple(int(v * 255) for v in _tint(rng))
            tile = Image.new("RGBA", (side, side), (*colour, 255))
            tile.alpha_composite(drawing.crop((left, top, left + side, top + side)))
            tiles.append(tile.convert("RGB"))
        return _mosaic(tiles, 2, size)


def paste(background: Image.Image, cutout: Image.Image, rng: np.random.Generator
          ) -> tuple[Image.Image, np.ndarray]:
    """(the composite, the pasted alpha uint8 [H, W]): `cutout` (RGBA) scaled so its longer side is
    a random share `SCALE` of the canvas, at a random place wholly inside it."""
    size = background.width
    w, h = cutout.size
    scale = rng.uniform(*SCALE) * size / max(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    cutout = cutout.resize(new, Image.Resampling.LANCZOS)
    left, top = int(rng.integers(0, size - new[0] + 1)), int(rng.integers(0, size - new[1] + 1))
    layer = Image.new("RGBA", background.size, (0, 0, 0, 0))
    layer.paste(cutout, (left, top))
    out = background.convert("RGBA")
    out.alpha_composite(layer)
    return out.convert("RGB"), np.asarray(layer.getchannel("A"))


class CompositeSet:
    """`len(cutouts) * per_image` composites of `size` px; `cutouts` are (name, open) pairs, open()
    returning the cut-out as a PIL image with transparency."""

    def __init__(self, cutouts: Sequence[tuple[str, Callable[[], Image.Image]]], size: int,
                 backgrounds: Backgrounds, per_image: int = 3, seed: int = 0):
        if per_image < 1:
            raise ValueError(f"composites per image must be >= 1, got {per_image}")
        if size < 8:
            raise ValueError(f"composite size must be >= 8 px, got {size}")
        self.cutouts, self.size, self.backgrounds = list(cutouts), size, backgrounds
        self.per_image, self.seed = per_image, seed

    def __len__(self) -> int:
        return len(self.cutouts) * self.per_image

    def __getitem__(self, i: int) -> Composite:
        if not 0 <= i < len(self):
            raise IndexError(i)
        name, open_cutout = self.cutouts[i // self.per_image]
        kinds = self.backgrounds.kinds
        kind = kinds[i % len(kinds)]
        rng = np.random.default_rng([self.seed, i])
        image, alpha = paste(self.backgrounds.make(kind, rng, self.size), rgba(open_cutout()), rng)
        return Composite(image, alpha >= MASK_ALPHA, alpha, f"{name}@{kind}#{i}")


def tuxpaint_composites(items, size: int, backgrounds: Sequence[str], per_image: int = 3,
                        seed: int = 0) -> CompositeSet:
    """Composites of Tux Paint stamps (`lipkit.data.tuxpaint.TuxPaintItem`s)."""

    def opener(path: Path) -> Callable[[], Image.Image]:
        def open_stamp() -> Image.Image:
            try:
                with Image.open(path) as im:
                    im.load()
                    return im.copy()
            except OSError as e:
                raise BadSampleError(str(path), f"cannot read the stamp ({e})") from None
        return open_stamp

    return CompositeSet([(it.id, opener(it.image)) for it in items], size, Backgrounds(backgrounds),
                        per_image, seed)
