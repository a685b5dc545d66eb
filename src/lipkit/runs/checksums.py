"""Checksums of the files in a folder: each file's size and SHA-256, recorded in the folder's
`manifest.json` once the files are written, and checked before they are trusted. A flipped bit, a
truncated or missing file (a bad disk, a partial copy, an edit) is found before any of it is read.
A folder whose manifest is missing is damaged too: nothing shows that its files are the ones written.

The run-directory format (lipkit.runs.directory) records one in every checkpoint, and a resume passes over
a checkpoint that does not match it. Imports nothing of lipkit but the file helpers."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from lipkit.files import write_json

MANIFEST_FILE = "manifest.json"
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: Path, names: Iterable[str]) -> Path:
    """Record the size and SHA-256 of `names` (files in `directory`, already written) in
    `directory/manifest.json`; returns its path."""
    files = {name: {"bytes": (directory / name).stat().st_size, "sha256": file_sha256(directory / name)}
             for name in names}
    path = directory / MANIFEST_FILE
    write_json(path, {"format": 1, "files": files})
    return path


def damage(directory: Path) -> str | None:
    """Why the files in `directory` cannot be trusted, or None when every file matches its
    manifest."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return f"{MANIFEST_FILE} is missing, so its files cannot be checked"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        expected = {str(name): (int(entry["bytes"]), str(entry["sha256"])) for name, entry in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{MANIFEST_FILE} is unreadable"
    for name, (size, sha256) in expected.items():
        file = Path(directory) / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, {size} were written"
        if file_sha256(file) != sha256:
            return f"{name} does not match the checksum recorded when it was written"
    return None
