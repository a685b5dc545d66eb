"""Rasterising SVG files to PNG with cairosvg, in parallel, with progress.

cairosvg needs the system library libcairo2 (Debian/Ubuntu: `apt-get install libcairo2`); without
it the first call raises a DataSourceError that says so. Rasters keep the drawing's aspect ratio
with the longer side at `size` pixels and a transparent background (flattened onto white when
loaded, see `images.open_image`).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .cache import DataSourceError

# An SVG can ask for a canvas of any size; we set the output size ourselves, so only a broken
# file gets past this, and its raster is refused.
_MAX_SIDE = 4096


def _cairosvg():
    try:
        import cairosvg
    except ImportError as e:
        raise DataSourceError(f"rasterising SVG needs the 'cairosvg' package: pip install cairosvg ({e})") from None
    except OSError as e:  # cairocffi cannot dlopen libcairo
        raise DataSourceError(
            f"cairosvg cannot load the system cairo library ({e}); install it, e.g. 'apt-get install libcairo2'"
        ) from None
    return cairosvg


def check_available() -> None:
    """Raise DataSourceError now if SVG rasterisation cannot work on this machine."""
    _cairosvg()


def rasterize(svg: Path, png: Path, size: int) -> None:
    """Write `svg` as a PNG whose longer side is `size` pixels (atomically: temp file + rename).
    Raises ValueError (or cairosvg's own error) for a drawing that cannot be rendered."""
    import io

    from PIL import Image

    cairosvg = _cairosvg()
    # cairosvg keeps the aspect ratio when given one side; render by width, and again by height
    # when the drawing turns out taller than wide.
    data = cairosvg.svg2png(url=str(svg), output_width=size, unsafe=False)
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
    if h > size:
        data = cairosvg.svg2png(url=str(svg), output_height=size, unsafe=False)
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    if not (0 < w <= _MAX_SIDE and 0 < h <= _MAX_SIDE):
        raise ValueError(f"raster would be {w}x{h}")
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, png)
    finally:
        tmp.unlink(missing_ok=True)


def _job(args: tuple[str, str, int]) -> tuple[str, str | None]:
    svg, png, size = args
    try:
        rasterize(Path(svg), Path(png), size)
        return svg, None
    except DataSourceError:
        raise
    except Exception as e:  # noqa: BLE001 - any parser failure marks this one drawing as bad
        return svg, f"{type(e).__name__}: {e}".splitlines()[0][:200]


def rasterize_many(jobs: Sequence[tuple[Path, Path]], size: int, workers: int = 0, desc: str = "rasterise") -> dict[str, str]:
    """Rasterise each (svg, png) pair (skipping PNGs already there). Returns {svg path: reason}
    for the drawings that failed. `workers` 0 means one per CPU core."""
    from lipkit.progress import progress_bar

    check_available()
    todo = [(str(s), str(p), size) for s, p in jobs if not Path(p).is_file()]
    failed: dict[str, str] = {}
    if not todo:
        return failed
    workers = workers or os.cpu_count() or 1
    bar = progress_bar(total=len(todo), desc=desc, unit="svg", dynamic_ncols=True)
    if workers == 1:
        results = map(_job, todo)
        for svg, err in results:
            if err:
                failed[svg] = err
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for svg, err in pool.map(_job, todo, chunksize=8):
                if err:
                    failed[svg] = err
                bar.update(1)
    bar.close()
    return failed
