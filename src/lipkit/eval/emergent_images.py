"""The pictures the `emergent` task writes (PNG bytes, drawn with PIL): attention overlays and
contact sheets of images (prototype galleries, nearest neighbours)."""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

# A perceptually ordered dark-to-bright colour ramp (close to matplotlib's "inferno").
_RAMP = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                  [245, 125, 21], [250, 193, 39], [252, 255, 164]], dtype=float)
LABEL_HEIGHT = 14
MASK_COLOUR = (0, 255, 120)
GAP = 4


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def colour_ramp(values: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] for values in [0, 1]."""
    x = np.clip(values, 0, 1) * (len(_RAMP) - 1)
    low = np.floor(x).astype(int).clip(0, len(_RAMP) - 2)
    t = (x - low)[..., None]
    return ((1 - t) * _RAMP[low] + t * _RAMP[low + 1]).round().astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    """The mask's boundary pixels (foreground with a background 4-neighbour)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _panel(image: Image.Image, side: int) -> Image.Image:
    return image.convert("RGB").resize((side, side), Image.Resampling.NEAREST if image.width <= side else
                                       Image.Resampling.BILINEAR)


def _labelled(panels: Sequence[tuple[str, Image.Image]]) -> Image.Image:
    side = panels[0][1].width
    out = Image.new("RGB", (len(panels) * side + (len(panels) - 1) * GAP, side + LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(out)
    for n, (label, panel) in enumerate(panels):
        x = n * (side + GAP)
        draw.text((x + 2, 1), label, fill=(31, 41, 51))
        out.paste(panel, (x, LABEL_HEIGHT))
    return out


def attention_strip(image: Image.Image, mask: np.ndarray, maps: Sequence[tuple[str, np.ndarray, np.ndarray]],
                    side: int = 128) -> bytes:
    """A row of panels: the image with its mask's outline, then per (label, map [g, g], kept [S, S])
    the map as a heat overlay, the kept region's outline in the mask's colour. Maps are scaled to
    their own maximum."""
    mask_up = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((side, side), Image.Resampling.NEAREST)) > 0
    base = np.asarray(_panel(image, side), dtype=float)
    first = base.copy()
    first[_outline(mask_up)] = MASK_COLOUR
    panels = [("image, mask", Image.fromarray(first.astype(np.uint8)))]
    for label, attention, kept in maps:
        scaled = attention / attention.max() if attention.max() > 0 else attention
        heat = Image.fromarray((scaled * 255).astype(np.uint8)).resize((side, side), Image.Resampling.BILINEAR)
        blended = 0.35 * base + 0.65 * colour_ramp(np.asarray(heat, dtype=float) / 255)
        kept_up = np.asarray(Image.fromarray(kept.astype(np.uint8) * 255).resize((side, side), Image.Resampling.NEAREST)) > 0
        blended[_outline(kept_up)] = (255, 255, 255)
        panels.append((label, Image.fromarray(blended.round().astype(np.uint8))))
    return png(_labelled(panels))


def contact_sheet(rows: Sequence[Sequence[Image.Image | None]], tile: int = 64) -> bytes:
    """Rows of thumbnails (None: an empty grey tile), `tile` px each, a thin gap between."""
    width = max(len(r) for r in rows)
    out = Image.new("RGB", (width * tile + (width - 1) * GAP, len(rows) * tile + (len(rows) - 1) * GAP), "white")
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            cell = Image.new("RGB", (tile, tile), (228, 231, 235)) if image is None else _fit(image, tile)
            out.paste(cell, (c * (tile + GAP), r * (tile + GAP)))
    return png(out)


def _fit(image: Image.Image, tile: int) -> Image.Image:
    """The image, aspect kept, centred on white in a tile x tile square."""
    image = image.convert("RGB")
    scale = tile / max(image.size)
    resized = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                           Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR)
    cell = Image.new("RGB", (tile, tile), "white")
    cell.paste(resized, ((tile - resized.width) // 2, (tile - resized.height) // 2))
    return cell


def image_at(images, i: int) -> Image.Image | None:
    """Image `i` of a split's images for drawing (None when it cannot be shown: unreadable, or
    a model-ready tensor)."""
    from lipkit.data.images import BadSampleError

    from .images import ImageFiles

    if isinstance(images, ImageFiles):
        try:
            return images.load(i)
        except BadSampleError:
            return None
    if isinstance(images, np.ndarray):
        return Image.fromarray(images[i])
    if isinstance(images, list):
        return images[i]
    return None
