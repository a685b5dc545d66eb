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
from collections.abc import Iterable, Iterator, Sequence
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


def image_files(root: Path) -> Iterator[Path]:
    """Every image file under `root`, recursively, in sorted order (folders and names)."""
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                yield Path(dirpath) / name


def caption_file(image: Path) -> Path:
    """The .txt beside an image that holds its captions, one per line (`cat.jpg` + `cat.txt`)."""
    return image.with_name(f"{os.path.splitext(image.name)[0]}.txt")


def read_caption_file(txt: Path) -> tuple[str, ...]:
    """The captions of a caption file (its non-empty lines); OSError when it cannot be read,
    NotUtf8Error when it is not UTF-8."""
    return clean_captions(read_utf8(txt).splitlines())


def read_folder(root: str | Path) -> tuple[list[PairRecord], Skipped]:
    """Every image under `root` (recursively) with a same-named .txt beside it; each non-empty
    line of the .txt is one caption (`cat.jpg` + `cat.txt`)."""
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"{root}: not a folder")
    records, skipped = [], []
    for image in image_files(root):
        txt = caption_file(image)
        try:
            captions = read_caption_file(txt)
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


def _group(rows: Iterable[tuple[str, str, str, list[str]]], base: Path, check_files: bool) -> tuple[list[PairRecord], Skipped]:
    """rows: (where, image path as written, label text, captions) -> records grouped by image."""
    order: dict[str, list] = {}
    skipped: Skipped = []
    missing: set[str] = set()
    for where, image, label, captions in rows:
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
        entry = order.setdefault(path, [[], _label(label, where)])
        entry[0].extend(captions)
    records = []
    for path, (caps, label) in order.items():
        records.append(PairRecord(path, clean_captions(caps), label))
    return records, skipped


def _label(text, where: str) -> int:
    if text is None or text == "":
        return -1
    try:
        return int(text)
    except (TypeError, ValueError):
        raise DataSourceError(f"{where}: label {text!r} is not an integer class index (the label column of "
                              f"training pairs holds class numbers 0, 1, ...)") from None


def table_rows(path: Path, required: Sequence[str] = (), delimiter: str | None = None
               ) -> Iterator[tuple[str, dict[str, str]]]:
    """(where, row) for each row of a CSV (or TSV: `delimiter="\\t"`, the default for a .tsv
    file) with a header; `where` is `file:line`. The `required` columns must be in the header."""
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    lines = _text_lines(path)
    reader = csv.DictReader(lines, delimiter=delimiter)
    try:
        header = reader.fieldnames or []
        absent = [c for c in required if c not in header]
        if absent:
            raise DataSourceError(
                f"{path}: no column {', '.join(map(repr, absent))}; the header has {', '.join(map(repr, header)) or 'nothing'}"
            )
        for row in reader:
            yield f"{path}:{reader.line_num}", row
    except csv.Error as e:
        raise DataSourceError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
    finally:
        lines.close()


def read_table(path: str | Path, image_column: str = "image", caption_column: str = "caption",
               label_column: str = "", delimiter: str | None = None, check_files: bool = True) -> tuple[list[PairRecord], Skipped]:
    """CSV (or TSV: `delimiter="\\t"`, the default for a .tsv file) with a header row."""
    path = Path(path)
    wanted = [c for c in (image_column, caption_column, label_column) if c]
    rows = [(where, (r[image_column] or "").strip(), r.get(label_column, "") if label_column else "",
             [r[caption_column] or ""]) for where, r in table_rows(path, wanted, delimiter)]
    return _group(rows, path.parent, check_files)


def jsonl_objects(path: Path) -> Iterator[tuple[str, dict | None, str]]:
    """(where, object, problem) for each non-empty line of a JSON Lines file: the object, or None
    and what is wrong with the line (not JSON, not an object)."""
    for n, line in enumerate(_text_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            yield where, None, f"not valid JSON ({e.msg})"
            continue
        if not isinstance(obj, dict):
            yield where, None, "not a JSON object"
            continue
        yield where, obj, ""


def read_jsonl(path: str | Path, image_column: str = "image", caption_column: str = "caption",
               label_column: str = "", check_files: bool = True) -> tuple[list[PairRecord], Skipped]:
    """One JSON object per line; the caption field holds a string or a list of strings."""
    path = Path(path)
    rows, skipped = [], []
    for where, obj, problem in jsonl_objects(path):
        if obj is None:
            skipped.append((where, problem))
            continue
        caps = obj.get(caption_column)
        caps = [caps] if isinstance(caps, str) else caps if isinstance(caps, list) else []
        image = obj.get(image_column)
        if not isinstance(image, str):
            skipped.append((where, f"no string field {image_column!r}"))
            continue
        label = obj.get(label_column, "") if label_column else ""
        rows.append((where, image.strip(), label, [c for c in caps if isinstance(c, str)]))
    records, more = _group(rows, path.parent, check_files)
    return records, skipped + more
