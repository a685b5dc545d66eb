"""Open Clip Art Library: public-domain SVG drawings with a title, keywords and a category folder.

Source: Debian package `openclipart-svg` (public domain, Open Clip Art Library contributors),
fetched once into `$LIPKIT_CACHE/openclipart` (`lipkit data fetch openclipart`): every SVG (not
the symlinked duplicates) is rasterised with cairosvg at 256 px on the longer side, and its
caption is built from the SVG's metadata:

    "<title> (<keyword>, <keyword>, ..., <folder>, <folder>)"

with boilerplate removed ("Clipart by NAME - ", "Part of the ... Collection", "hash", hex ids) and
the file name standing in for a missing title. Drawings cairosvg's safe parser refuses or that
have no usable text are left out and listed in meta.json.

    from lipkit.data.openclipart import load_openclipart
    items = load_openclipart()   # list[ClipArtItem(id, image, caption, category)]
"""
from __future__ import annotations

import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .cache import DataSourceError, cache_dir
from .manifest import fetched_items, needs_fetch, write_manifest

LICENCE = "Public domain (Debian package openclipart-svg; Open Clip Art Library contributors)"
PACKAGE = "openclipart-svg"
SVG_DIR = "usr/share/openclipart/svg"
RASTER_SIZE = 256
FORMAT_VERSION = 1

_NS = {
    "dc": "http://purl.org/dc/elements/1.1/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "cc": "http://web.resource.org/cc/",
}
_BOILERPLATE_TITLE = re.compile(r"^(part of the .* collection.*|untitled.*|drawing|image|svg|clipart|layer ?\d*)$", re.I)
_CLIPART_BY = re.compile(r"^clip ?art by [^-]+ - ", re.I)
GENERIC_TITLE_COUNT = 5  # a title on this many drawings or more names a collection, not a drawing
_JUNK_KEYWORD = re.compile(r"^(hash|none|0x[0-9a-f]+|[0-9a-f]{6,}|\d+|unsorted|clip ?art|clipart|svg|image|.{0,1})$", re.I)


@dataclass(frozen=True)
class ClipArtItem:
    id: str  # path under svg/ without extension, e.g. "animals/mammals/dog_03"
    image: Path
    caption: str
    category: str  # top-level folder

    @property
    def captions(self) -> tuple[str, ...]:
        return (self.caption,)


def data_dir() -> Path:
    return cache_dir() / "openclipart"


def _words(text: str) -> str:
    text = re.sub(r"[_\s]+", " ", text).strip(" .,;:-")
    return text


def _stem_words(stem: str) -> str:
    parts = [p for p in re.split(r"[_\-\s]+", stem) if p and not p.isdigit() and len(p) > 1]
    return " ".join(parts)


def clean_title(title: str) -> str:
    return _words(_CLIPART_BY.sub("", (title or "").strip()))


def caption_from_metadata(title: str, keywords: list[str], folders: list[str], stem: str,
                          generic_titles: frozenset[str] = frozenset()) -> str:
    """The caption of one drawing (see the module docstring). A title in `generic_titles` (one
    shared by many drawings: a collection's name) is replaced by the file name's words."""
    title = clean_title(title)
    if not title or _BOILERPLATE_TITLE.match(title) or title.lower() in generic_titles:
        title = _stem_words(stem)
    title_lower = title.lower()
    extra: list[str] = []
    for k in list(keywords) + [f.replace("_", " ") for f in reversed(folders)]:
        k = _words(k or "").lower()
        if not k or _JUNK_KEYWORD.match(k) or k in extra or k == title_lower:
            continue
        extra.append(k)
    if not title:
        return ""
    return f"{title} ({', '.join(extra[:8])})" if extra else title


def read_metadata(svg: Path) -> tuple[str, list[str]]:
    """(title, keywords) from the SVG's RDF metadata; raises ValueError for unparsable XML."""
    from defusedxml import ElementTree

    try:
        root = ElementTree.parse(str(svg)).getroot()
    except Exception as e:  # noqa: BLE001 - defusedxml/expat raise several types
        raise ValueError(f"{type(e).__name__}: {e}") from None
    work = root.find(".//cc:Work", _NS)
    if work is None:
        return "", []
    title = work.findtext("dc:title", default="", namespaces=_NS) or ""
    keywords = [li.text or "" for li in work.findall("dc:subject/rdf:Bag/rdf:li", _NS)]
    return title, keywords


def fetch(force: bool = False, workers: int = 0) -> Path:
    """Fetch, caption and rasterise the drawings into the cache (a no-op when done before)."""
    from lipkit.progress import progress_bar

    from . import debian, svg

    dest = data_dir()
    if not needs_fetch(dest, FORMAT_VERSION, force, svg.check_available):
        return dest
    entries, skipped = [], []
    try:
        with debian.extracted_package(PACKAGE) as root:
            base = root / SVG_DIR
            if not base.is_dir():
                raise DataSourceError(f"package {PACKAGE} has no folder /{SVG_DIR}")
            files = sorted(p for p in base.rglob("*.svg") if not p.is_symlink() and p.is_file())
            metadata = {}
            for f in progress_bar(files, desc="openclipart: read metadata", unit="svg", dynamic_ncols=True):
                rel = f.relative_to(base).with_suffix("").as_posix()
                try:
                    metadata[f] = read_metadata(f)
                except ValueError as e:
                    skipped.append((rel, f"unreadable SVG ({e})"[:200]))
            counts = Counter(clean_title(t).lower() for t, _ in metadata.values())
            generic = frozenset(t for t, n in counts.items() if n >= GENERIC_TITLE_COUNT)
            for f, (title, keywords) in metadata.items():
                rel = f.relative_to(base).with_suffix("").as_posix()
                folders = rel.split("/")[:-1]
                caption = caption_from_metadata(title, keywords, folders, f.stem, generic)
                if not caption:
                    skipped.append((rel, "no usable title, keyword or file name"))
                    continue
                entries.append({"id": rel, "image": f"images/{rel}.png", "caption": caption,
                                "category": folders[0] if folders else "", "src": str(f)})
            failed = svg.rasterize_many([(Path(e["src"]), dest / e["image"]) for e in entries], RASTER_SIZE,
                                        workers, desc="openclipart: rasterise")
            version = debian.package_version(root, PACKAGE)
    except OSError as e:
        raise DataSourceError(f"cannot prepare Open Clip Art in {dest}: {e}") from None
    kept = []
    for e in entries:
        if e["src"] in failed:
            skipped.append((e["id"], f"cannot rasterise: {failed[e['src']]}"))
            continue
        del e["src"]
        kept.append(e)
    write_manifest(dest, kept, skipped, {"format_version": FORMAT_VERSION, "package": PACKAGE, "version": version,
                                         "license": LICENCE, "raster_size": RASTER_SIZE})
    return dest


def load_openclipart(fetch_if_missing: bool = True) -> list[ClipArtItem]:
    dest = data_dir()
    return fetched_items(dest, FORMAT_VERSION, lambda e: ClipArtItem(e["id"], dest / e["image"], e["caption"], e["category"]),
                         name="openclipart", what="Open Clip Art", fetch=fetch, fetch_if_missing=fetch_if_missing)


def clear_cache() -> None:
    shutil.rmtree(data_dir(), ignore_errors=True)
