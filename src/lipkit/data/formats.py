"""Readers for pairs kept as files: a folder of images with .txt captions, CSV/TSV, JSON Lines.

Each reader returns (records, skipped): records with at least one caption and an existing image
file, and (where, reason) for everything left out. Relative image paths are relative to the
CSV/JSONL file's folder. Several rows naming the same image give that image several captions.

Text is UTF-8, with or without a byte-order mark (see lipkit.utf8_text): a CSV or JSONL file in
another encoding stops with its name and line; a caption .txt in another encoding is a bad sample
named in the report. Nothing is decoded into replacement characters.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path

from lipkit.utf8_text import NotUtf8Error, read_utf8, utf8_lines

from .cache import DataSourceError
from .pairs import PairRecord, clean_captions

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

Skipped = list[tuple[str, str]]


def _text_lines(path: Path):
    """The file's lines (see utf8_lines); a file that cannot be opened or is not UTF-8 is a
    DataSourceError naming it (and the line)."""
    try:
        yield from utf8_lines(path)
    except OSError as e:
        raise DataSourceError(f"{path}: cannot open ({e.strerror or e})") from None
    except NotUtf8Error as e:
        raise DataSourceError(str(e)) from None


def read_folder(root: str | Path) -> tuple[list[PairRecord], Skipped]:
    """Every image under `root` (recursively) with a same-named .txt beside it; each non-empty
    line of the .txt is one caption (`cat.jpg` + `cat.txt`)."""
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"{root}: not a folder")
    records, skipped = [], []
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            image = Path(dirpath) / name
            txt = Path(dirpath) / f"{stem}.txt"
            try:
                captions = clean_captions(read_utf8(txt).splitlines())
            except FileNotFoundError:
                skipped.append((str(image), f"no caption file {txt.name}"))
                continue
            except OSError as e:
                skipped.append((str(txt), f"cannot read ({e.strerror or e})"))
                continue
            except NotUtf8Error as e:
                skipped.append((e.where, e.reason))
                continue
            if not captions:
                skipped.append((str(image), f"empty caption file {txt.name}"))
                continue
            records.append(PairRecord(str(image), captions))
    return records, skipped


def _group(rows: Iterable[tuple[str, str, str, list[str], int]], base: Path, check_files: bool) -> tuple[list[PairRecord], Skipped]:
    """rows: (where, image path as written, label text, captions, line) -> records grouped by image."""
    order: dict[str, list] = {}
    skipped: Skipped = []
    missing: set[str] = set()
    for where, image, label, captions, _ in rows:
        if not image:
            skipped.append((where, "empty image path"))
            continue
        path = str((base / image) if not os.path.isabs(image) else Path(image))
        if check_files and path not in order and path not in missing and not os.path.isfile(path):
            missing.add(path)
        if path in missing:
            skipped.append((where, f"image {path} not found"))
            continue
        captions = clean_captions(captions)
        if not captions:
            skipped.append((where, "empty caption"))
            continue
        entry = order.setdefault(path, [[], label])
        entry[0].extend(captions)
    records = []
    for path, (caps, label) in order.items():
        records.append(PairRecord(path, clean_captions(caps), _label(label)))
    return records, skipped


def _label(text) -> int:
    if text is None or text == "":
        return -1
    try:
        return int(text)
    except (TypeError, ValueError):
        raise DataSourceError(f"label {text!r} is not an integer class index") from None


def read_table(path: str | Path, image_column: str = "image", caption_column: str = "caption",
               label_column: str = "", delimiter: str | None = None, check_files: bool = True) -> tuple[list[PairRecord], Skipped]:
    """CSV (or TSV: `delimiter="\\t"`, the default for a .tsv file) with a header row."""
    path = Path(path)
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    lines = _text_lines(path)
    reader = csv.DictReader(lines, delimiter=delimiter)
    try:
        header = reader.fieldnames or []
        wanted = [c for c in (image_column, caption_column, label_column) if c]
        absent = [c for c in wanted if c not in header]
        if absent:
            raise DataSourceError(
                f"{path}: no column {', '.join(map(repr, absent))}; the header has {', '.join(map(repr, header)) or 'nothing'}"
            )
        rows = [(f"{path}:{reader.line_num}", (r[image_column] or "").strip(),
                 r.get(label_column, "") if label_column else "", [r[caption_column] or ""], reader.line_num)
                for r in reader]
    except csv.Error as e:
        raise DataSourceError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
    finally:
        lines.close()
    return _group(rows, path.parent, check_files)


def read_jsonl(path: str | Path, image_column: str = "image", caption_column: str = "caption",
               label_column: str = "", check_files: bool = True) -> tuple[list[PairRecord], Skipped]:
    """One JSON object per line; the caption field holds a string or a list of strings."""
    path = Path(path)
    rows, skipped = [], []
    for n, line in enumerate(_text_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            skipped.append((where, f"not valid JSON ({e.msg})"))
            continue
        if not isinstance(obj, dict):
            skipped.append((where, "not a JSON object"))
            continue
        caps = obj.get(caption_column)
        caps = [caps] if isinstance(caps, str) else caps if isinstance(caps, list) else []
        image = obj.get(image_column)
        if not isinstance(image, str):
            skipped.append((where, f"no string field {image_column!r}"))
            continue
        label = obj.get(label_column, "") if label_column else ""
        rows.append((where, image.strip(), label, [c for c in caps if isinstance(c, str)], n))
    records, more = _group(rows, path.parent, check_files)
    return records, skipped + more
