"""Images with a foreground mask, for the localisation part of the `emergent` task.

Three sources, in this order of choice:

- a mask folder (`eval.emergent.masks`, `lipkit eval --masks DIR`) for a dataset opened by path:
  one mask per test image, at the same size, found under DIR by the image's path with its
  extension replaced by `.png`, the longest match first: `photos/cat/0001.jpg` takes
  `DIR/cat/0001.png`, else `DIR/0001.png` (a shard sample `s0000042.webp` takes
  `DIR/s0000042.png`). Foreground: alpha >= 128 in a mask with transparency, else grey >= 128.
- the built-in `tuxpaint` data set: its test stamps (the fixed hold-out, or the validation stamps
  with eval.split=validation; eval.test_limit applies) pasted onto cluttered backgrounds
  (`lipkit.data.composites`), `eval.emergent.composites_per_image` composites each;
- otherwise the images' own alpha channel (cut-outs): images without transparency have no mask.

Every source is indexed: `len(source)` images, `source.item(i)` -> `Masked` (the RGB image as
the model would see it before preprocessing, flattened onto white where it had transparency, and
its mask), or a `BadSampleError` naming the image and why it has no usable mask.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from lipkit.config import EvalConfig
from lipkit.data.images import DEFAULT_MAX_PIXELS, WHITE, BadSampleError

from .errors import EvalError
from .images import ImageFiles
from .splits import EvalData, Split

MASK_LEVEL = 128


@dataclass
class Masked:
    image: Image.Image  # RGB
    mask: np.ndarray  # bool [H, W], the image's size
    name: str


def _open(source, where: str) -> Image.Image:
    """A decoded image, transparency kept; the pixel limit checked before decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                if im.width * im.height > DEFAULT_MAX_PIXELS:
                    raise BadSampleError(where, f"image is {im.width}x{im.height}, over the pixel limit")
                im.load()
                return im.copy()
    except BadSampleError:
        raise
    except FileNotFoundError:
        raise BadSampleError(where, "file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadSampleError(where, f"cannot decode image ({type(e).__name__}: {e})") from None


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)


def _flatten(im: Image.Image) -> Image.Image:
    if not _has_alpha(im):
        return im.convert("RGB")
    canvas = Image.new("RGBA", im.size, (*WHITE, 255))
    return Image.alpha_composite(canvas, im.convert("RGBA")).convert("RGB")


def alpha_mask(im: Image.Image) -> np.ndarray | None:
    """alpha >= 128 of an image with some transparent pixel; None without transparency."""
    if not _has_alpha(im):
        return None
    alpha = np.asarray(im.convert("RGBA").getchannel("A"))
    return alpha >= MASK_LEVEL if (alpha < 255).any() else None


class CompositeSource:
    """Tux Paint stamps on cluttered backgrounds (lipkit.data.composites)."""

    def __init__(self, composites):
        self.composites = composites

    def __len__(self) -> int:
        return len(self.composites)

    def item(self, i: int) -> Masked:
        c = self.composites[i]
        return Masked(c.image, c.mask, c.name)


class AlphaSource:
    """A split's images, each masked by its own alpha channel."""

    def __init__(self, split: Split):
        self.images = split.images

    def __len__(self) -> int:
        return len(self.images)

    def _raw(self, i: int) -> tuple[Image.Image, str]:
        images = self.images
        if isinstance(images, ImageFiles):
            ref = images.refs[i]
            source = ref.source()
            return _open(Path(source) if isinstance(source, str) else io.BytesIO(source), ref.where), ref.where
        if isinstance(images, np.ndarray):
            return Image.fromarray(images[i]), f"image {i}"
        if isinstance(images, list):
            return images[i], f"image {i}"
        raise BadSampleError(f"image {i}", "model-ready tensors have no alpha channel")

    def item(self, i: int) -> Masked:
        im, where = self._raw(i)
        mask = alpha_mask(im)
        if mask is None:
            raise BadSampleError(where, "no transparent pixels to take the foreground from")
        return Masked(_flatten(im), mask, where)


def _mask_key(where: str) -> tuple[str, ...]:
    """The path parts of an image's name, extension dropped: "a/cat/1.jpg" -> (a, cat, 1)."""
    name = where.rsplit(":", 1)[-1] if ":" in where and not os.path.exists(where) else where
    parts = PurePosixPath(name.replace(os.sep, "/")).with_suffix("").parts
    return tuple(p for p in parts if p not in ("", "/"))


class FolderSource(AlphaSource):
    """A split's image files, each with its mask from a folder."""

    def __init__(self, split: Split, folder: str):
        super().__init__(split)
        root = Path(folder)
        if not root.is_dir():
            raise EvalError(f"eval.emergent.masks: {folder}: no such folder")
        if not isinstance(split.images, ImageFiles):
            raise EvalError("eval.emergent.masks: masks are matched to image files by name, and this "
                            "dataset's images are not files (give a dataset by path)")
        self.index: dict[tuple[str, ...], Path] = {}
        for path in root.rglob("*.png"):
            self.index[PurePosixPath(path.relative_to(root).as_posix()).with_suffix("").parts] = path
        if not self.index:
            raise EvalError(f"eval.emergent.masks: {folder}: no .png masks in it")
        self.folder = folder
        found = sum(self.mask_path(r.where) is not None for r in split.images.refs)
        if not found:
            example = split.images.refs[0].where
            raise EvalError(f"eval.emergent.masks: no mask in {folder} for any of the {len(split)} test "
                            f"images (e.g. {example} looks for {'/'.join(_mask_key(example)[-2:])}.png)")

    def mask_path(self, where: str) -> Path | None:
        key = _mask_key(where)
        return next((self.index[key[-n:]] for n in range(len(key), 0, -1) if key[-n:] in self.index), None)

    def item(self, i: int) -> Masked:
        im, where = self._raw(i)
        path = self.mask_path(where)
        if path is None:
            raise BadSampleError(where, f"no mask in {self.folder}")
        mask_image = _open(path, str(path))
        if mask_image.size != im.size:
            raise BadSampleError(str(path), f"mask is {mask_image.width}x{mask_image.height}, its image "
                                 f"{im.width}x{im.height}")
        mask = alpha_mask(mask_image)
        if mask is None:
            mask = np.asarray(mask_image.convert("L")) >= MASK_LEVEL
        return Masked(_flatten(im), mask, where)


TUXPAINT = ("tuxpaint", "tuxpaint:validation")


def tuxpaint_test_items(cfg: EvalConfig):
    """The stamps of the `tuxpaint` data set's test split, as lipkit.eval.datasets builds it."""
    from lipkit.data.tuxpaint import load_tuxpaint, tuxpaint_holdout_split, tuxpaint_validation_split

    split = tuxpaint_validation_split if cfg.split == "validation" else tuxpaint_holdout_split
    _, test = split(items=load_tuxpaint())
    return test[:cfg.test_limit] if cfg.test_limit else test


def masked_images(data: EvalData, split: Split, cfg: EvalConfig, size: int):
    """(the source of masked images for `data`, the record's dataset name); `size`: the model's
    input side, at which composites are made (with a fixed seed: the same images for every run)."""
    settings = cfg.emergent
    if settings.masks:
        return FolderSource(split, settings.masks), data.name
    if data.name in TUXPAINT:
        from lipkit.data.composites import tuxpaint_composites

        try:
            composites = tuxpaint_composites(tuxpaint_test_items(cfg), size, settings.backgrounds,
                                             settings.composites_per_image, seed=0)
        except ValueError as e:
            raise EvalError(f"eval.emergent: {e}") from None
        return CompositeSource(composites), f"{data.name}-composites"
    return AlphaSource(split), data.name
