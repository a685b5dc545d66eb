"""Opening images safely: size checked before decoding, transparency flattened, one error type.

Every failure (missing file, unreadable or truncated data, an image over the pixel limit) is a
`BadSampleError` naming the file, so pair datasets can skip it, count it and say where it was.
`flatten_image` is what decoding does to the pixels (EXIF orientation, 16-bit grey, transparency),
for an image decoded elsewhere.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lipkit.errors import LipkitError

# 64 megapixels: far above any training image, far below what would exhaust memory (a
# decompression bomb is a tiny file that decodes to billions of pixels).
DEFAULT_MAX_PIXELS = 64_000_000
WHITE = (255, 255, 255)


class BadSampleError(LipkitError, ValueError):
    """One sample cannot be used (missing/corrupt/oversized image, empty caption); `where` names it."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


def open_image(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    mode: str = "RGB",
    background: tuple[int, int, int] = WHITE,
) -> Image.Image:
    """Decode `source` (a path or the file's bytes) into a PIL image of `mode` ("RGB" or "L").

    The header is read first and an image of more than `max_pixels` pixels is refused before its
    pixels are decoded. Transparent images (cut-outs, clip art) are composited onto `background`:
    converting them straight to RGB would expose whatever colour the transparent pixels hold.
    `name` is what errors call the image (defaults to the path)."""
    where = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            # PIL's own bomb warning fires at open; the explicit limit below is the one we apply.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise BadSampleError(where, f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}")
                im.load()
                return _flatten(im, mode, background)
    except BadSampleError:
        raise
    except FileNotFoundError:
        raise BadSampleError(where, "file not found") from None
    except Image.DecompressionBombError as e:
        raise BadSampleError(where, f"refused as a decompression bomb ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        # PIL raises OSError for truncated data, SyntaxError/ValueError for some broken headers.
        raise BadSampleError(where, f"cannot decode image ({type(e).__name__}: {e})") from None


ORIENTATION = 0x0112  # the EXIF tag of a photo's rotation and mirroring
WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit grey (and 32-bit integer) images


def flatten_image(im: Image.Image, mode: str = "RGB", background: tuple[int, int, int] = WHITE) -> Image.Image:
    """A decoded image as lipkit reads every image (training, evaluation, `lipkit.load`'s
    preprocess), in `mode`: turned upright as its EXIF orientation says; 16-bit grey scaled to 8
    bits (PIL's own conversion clips it at 255, a white image); transparency (an alpha channel,
    a palette's transparent colour) painted onto `background`."""
    return _flatten(im, mode, background)


def _upright(im: Image.Image) -> Image.Image:
    return ImageOps.exif_transpose(im) if im.getexif().get(ORIENTATION, 1) != 1 else im


def _eight_bit(im: Image.Image) -> Image.Image:
    """16-bit grey (0..65535, also when held in a 32-bit integer image) as 8-bit grey, rounded."""
    values = np.clip(np.asarray(im).astype(np.float64), 0, 65535)
    return Image.fromarray(np.rint(values / 257).astype(np.uint8))  # 2-D uint8: mode L


def _flatten(im: Image.Image, mode: str, background: tuple[int, int, int]) -> Image.Image:
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    im = _upright(im)
    if im.mode in WIDE_GREY_MODES:
        im = _eight_bit(im)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        im = Image.alpha_composite(canvas, rgba)
    return im.convert(mode)
