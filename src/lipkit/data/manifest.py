"""The on-disk index of a fetched built-in source: `items.jsonl` (one JSON object per item) and
`meta.json` (package, version, licence, format version, skipped files). `meta.json` is written
last, so a source counts as fetched only once both files are complete."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, TypeVar

from lipkit.files import atomic_write, write_json
from lipkit.data.cache import DataSourceError

MANIFEST = "items.jsonl"
META = "meta.json"
T = TypeVar("T")


def is_fetched(dest: Path, format_version: int) -> bool:
    try:
        meta = json.loads((dest / META).read_text())
    except (OSError, ValueError):
        return False
    return meta.get("format_version") == format_version and (dest / MANIFEST).is_file()


def write_manifest(dest: Path, entries: list[dict], skipped: list[tuple[str, str]], meta: dict) -> None:
    atomic_write(dest / MANIFEST, lambda p: p.write_text("".join(json.dumps(e) + "\n" for e in entries)))
    full = {**meta, "items": len(entries), "skipped": [list(s) for s in skipped]}
    write_json(dest / META, full)


def read_manifest(dest: Path, build: Callable[[dict], T], refetch: str) -> list[T]:
    """`build(entry)` for every line; a corrupt line is an error naming it and `refetch`."""
    items = []
    for n, line in enumerate((dest / MANIFEST).read_text(encoding="utf-8").splitlines(), 1):
        try:
            items.append(build(json.loads(line)))
        except (ValueError, KeyError, TypeError) as err:
            raise DataSourceError(f"{dest / MANIFEST}:{n}: corrupt entry ({err}); run '{refetch}'") from None
    return items
