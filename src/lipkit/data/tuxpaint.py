"""Tux Paint stamps: real photo cut-outs and drawings with one English caption each.

Source: Debian package `tuxpaint-stamps-default` (GPL-2, Bill Kendrick and contributors), fetched
once with `apt-get download` + `dpkg-deb -x` into `$LIPKIT_CACHE/tuxpaint` (`lipkit data fetch
tuxpaint`). A stamp is `stamps/<category>/.../NAME.{png,svg}` with its caption on the first line of
`NAME.txt` (the other lines are translations). 949 stamps in 16 categories (83 ship both a PNG
thumbnail and the SVG drawing: the SVG is used, rasterised at 256 px; `_mirror` variants and one
SVG that cairosvg's safe parser refuses are left out), 803 distinct captions: equal captions on different stamps ("A flower.") are real, so
retrieval should count a hit when the caption *text* matches. Stamps under a `cartoon/` folder
are drawings; the rest are mostly photos: `style` is "cartoon" or "photo".

The stable API (other modules and evaluation build on it):

    from lipkit.data.tuxpaint import load_tuxpaint, tuxpaint_holdout_split, CATEGORIES
    items = load_tuxpaint()                  # list[TuxPaintItem], sorted by id; fetches on first use
    train, holdout = tuxpaint_holdout_split(seed=0, size=200)   # the fixed 200-item hold-out
    photos = [it for it in holdout if it.style == "photo"]      # style-shift split
    item.image     # Path of a PNG (RGBA: flatten with lipkit.data.images.open_image)
    item.caption   # "A male black rhino."
    item.category  # "animals"; item.label = CATEGORIES.index(item.category)
    item.style     # "photo" | "cartoon"

`tuxpaint_pairs(items, transform)` turns items into a pair dataset (see lipkit.data.pairs).
"""
from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .cache import DataSourceError, atomic_copy, cache_dir
from .manifest import fetched_items, needs_fetch, write_manifest

LICENCE = ("GPL-2.0-or-later (Debian package tuxpaint-stamps-default; stamps by Bill Kendrick and "
           "contributors)")
PACKAGE = "tuxpaint-stamps-default"
STAMPS_DIR = "usr/share/tuxpaint/stamps"
RASTER_SIZE = 256  # longer side of rasterised SVG stamps
FORMAT_VERSION = 1
HOLDOUT_SIZE = 200

CATEGORIES = (
    "animals", "clothes", "food", "hobbies", "household", "medical", "military", "naturalforces",
    "people", "plants", "seasonal", "space", "sports", "symbols", "town", "vehicles",
)
# Readable names for prompts ("a photo of {}"): the folder names run words together.
CATEGORY_NAMES = {c: c for c in CATEGORIES} | {"naturalforces": "natural forces", "household": "household items",
                                                "medical": "medical items", "military": "military equipment",
                                                "town": "town buildings", "seasonal": "seasonal decorations"}
STYLES = ("photo", "cartoon")
_VARIANT_SUFFIXES = ("_mirror", "_flip", "_back")


@dataclass(frozen=True)
class TuxPaintItem:
    id: str  # path of the stamp under stamps/ without extension, e.g. "animals/mammals/rhino"
    image: Path  # PNG in the cache
    caption: str
    category: str
    style: str  # "photo" | "cartoon"
    format: str  # the stamp's original format: "png" | "svg"

    @property
    def label(self) -> int:
        return CATEGORIES.index(self.category)

    @property
    def captions(self) -> tuple[str, ...]:
        return (self.caption,)


def data_dir() -> Path:
    return cache_dir() / "tuxpaint"


def _scan(stamps: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    """Stamps under `stamps`: (entries, skipped) with skipped = [(path, reason)]."""
    entries, skipped = [], []
    for root, dirs, files in os.walk(stamps):
        dirs.sort()
        root_p = Path(root)
        stems: dict[str, set[str]] = {}
        for f in files:
            stem, ext = os.path.splitext(f)
            if ext in (".png", ".svg") and not stem.endswith(_VARIANT_SUFFIXES):
                stems.setdefault(stem, set()).add(ext[1:])
        for stem in sorted(stems):
            rel = (root_p / stem).relative_to(stamps).as_posix()
            txt = root_p / f"{stem}.txt"
            try:
                caption = txt.read_text(encoding="utf-8", errors="replace").splitlines()[0].strip()
            except (OSError, IndexError):
                caption = ""
            if not caption:
                skipped.append((rel, "no caption (missing or empty .txt)"))
                continue
            parts = rel.split("/")
            if parts[0] not in CATEGORIES:
                skipped.append((rel, f"unknown category folder {parts[0]!r}"))
                continue
            fmt = "svg" if "svg" in stems[stem] else "png"
            fallback = str(root_p / f"{stem}.png") if fmt == "svg" and "png" in stems[stem] else None
            entries.append({
                "id": rel, "image": f"images/{rel}.png", "caption": caption, "category": parts[0],
                "style": "cartoon" if "cartoon" in parts[1:-1] else "photo", "format": fmt,
                "src": str(root_p / f"{stem}.{fmt}"), "fallback": fallback,
            })
    return entries, skipped


def fetch(force: bool = False, workers: int = 0) -> Path:
    """Fetch and prepare the stamps in the cache (a no-op when done before); returns the folder."""
    from . import debian, svg

    dest = data_dir()
    if not needs_fetch(dest, FORMAT_VERSION, force, svg.check_available):
        return dest
    try:
        with debian.extracted_package(PACKAGE) as root:
            stamps = root / STAMPS_DIR
            if not stamps.is_dir():
                raise DataSourceError(f"package {PACKAGE} has no folder /{STAMPS_DIR}")
            entries, skipped = _scan(stamps)
            for e in entries:
                if e["format"] == "png":
                    atomic_copy(Path(e["src"]), dest / e["image"])
            failed = svg.rasterize_many(
                [(Path(e["src"]), dest / e["image"]) for e in entries if e["format"] == "svg"],
                RASTER_SIZE, workers, desc="tuxpaint: rasterise SVG stamps",
            )
            for e in entries:  # an SVG cairosvg refuses, with a PNG beside it: use the PNG
                if e["src"] in failed and e["fallback"]:
                    del failed[e["src"]]
                    e["src"], e["format"] = e["fallback"], "png"
                    atomic_copy(Path(e["src"]), dest / e["image"])
            version = debian.package_version(root, PACKAGE)
            copyright_file = root / "usr/share/doc" / PACKAGE / "copyright"
            if copyright_file.is_file():
                atomic_copy(copyright_file, dest / "copyright")
    except OSError as e:
        raise DataSourceError(f"cannot prepare Tux Paint stamps in {dest}: {e}") from None
    stamp_root = str(stamps)
    skipped += [(Path(s).relative_to(stamp_root).as_posix(), f"cannot rasterise: {r}") for s, r in failed.items()]
    kept = [e for e in entries if e["src"] not in failed]
    for e in kept:
        del e["src"], e["fallback"]
    write_manifest(dest, kept, skipped, {"format_version": FORMAT_VERSION, "package": PACKAGE, "version": version,
                                         "license": LICENCE, "raster_size": RASTER_SIZE})
    return dest


def load_tuxpaint(fetch_if_missing: bool = True) -> list[TuxPaintItem]:
    """Every stamp, sorted by id (fetched into the cache on first use)."""
    dest = data_dir()
    return fetched_items(dest, FORMAT_VERSION, lambda e: TuxPaintItem(e["id"], dest / e["image"], e["caption"], e["category"], e["style"], e["format"]),
                         name="tuxpaint", what="Tux Paint stamps", fetch=fetch, fetch_if_missing=fetch_if_missing)


def _rank_key(seed: int, item_id: str) -> str:
    # A hash rather than an RNG permutation: the split never changes with library versions or
    # with stamps added to or removed from the package (the others keep their place).
    return hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()


def tuxpaint_holdout_split(
    seed: int = 0, size: int = HOLDOUT_SIZE, items: list[TuxPaintItem] | None = None
) -> tuple[list[TuxPaintItem], list[TuxPaintItem]]:
    """(train, holdout): `size` stamps chosen by hashing (seed, id), the rest for training.
    Both lists are sorted by id and disjoint; the default is the project's fixed hold-out."""
    items = load_tuxpaint() if items is None else sorted(items, key=lambda it: it.id)
    if not 0 <= size <= len(items):
        raise ValueError(f"hold-out size must be between 0 and {len(items)}, got {size}")
    chosen = {it.id for it in sorted(items, key=lambda it: _rank_key(seed, it.id))[:size]}
    train = [it for it in items if it.id not in chosen]
    holdout = [it for it in items if it.id in chosen]
    return train, holdout


VALIDATION_SIZE = 150


def tuxpaint_validation_split(size: int = VALIDATION_SIZE, items: list[TuxPaintItem] | None = None
                              ) -> tuple[list[TuxPaintItem], list[TuxPaintItem]]:
    """(fit, validation): the training stamps (outside the fixed hold-out) split again, `size` of
    them chosen by hash for choosing settings, so that nothing is tuned on the hold-out."""
    train, _ = tuxpaint_holdout_split(items=items)
    return tuxpaint_holdout_split(seed=1, size=size, items=train)


def clear_cache() -> None:
    shutil.rmtree(data_dir(), ignore_errors=True)
