"""The on-disk index of a fetched built-in source: `items.jsonl` (one JSON object per item) and
`meta.json` (package, version, licence, format version, skipped files). `meta.json` is written
last, so a source counts as fetched only once both files are complete. `needs_fetch` and
`fetched_items` are the start and the end every prepared source (tuxpaint, openclipart) shares."""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from lipkit.data.cache import DataSourceError
from lipkit.files import atomic_write, write_json

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


def needs_fetch(dest: Path, format_version: int, force: bool, check: Callable[[], None]) -> bool:
    """Whether a source must be prepared into `dest`: it is not there in this format, or `force`.
    Then `check()` runs first (for the tools preparing needs: when it fails, the cache is left as
    it was), and a forced fetch starts from an empty folder."""
    if is_fetched(dest, format_version) and not force:
        return False
    check()
    if force:
        shutil.rmtree(dest, ignore_errors=True)
    return True


def fetched_items(dest: Path, format_version: int, build: Callable[[dict], T], *, name: str, what: str,
                  fetch: Callable[[], object], fetch_if_missing: bool = True) -> list[T]:
    """The items of source `name` (`what` in messages) in `dest`, sorted by id: `fetch()` first
    when it is not there, or an error naming the command that fetches it."""
    if not is_fetched(dest, format_version):
        if not fetch_if_missing:
            raise DataSourceError(f"{what}: not in {dest}; run 'lipkit data fetch {name}'")
        fetch()
    return sorted(read_manifest(dest, build, f"lipkit data fetch {name} --force"), key=lambda it: it.id)


def read_manifest(dest: Path, build: Callable[[dict], T], refetch: str) -> list[T]:
    """`build(entry)` for every line; a corrupt line is an error naming it and `refetch`."""
    items = []
    for n, line in enumerate((dest / MANIFEST).read_text(encoding="utf-8").splitlines(), 1):
        try:
            items.append(build(json.loads(line)))
        except (ValueError, KeyError, TypeError) as err:
            raise DataSourceError(f"{dest / MANIFEST}:{n}: corrupt entry ({err}); run '{refetch}'") from None
    return items
