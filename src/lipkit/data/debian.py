"""Fetch files out of a Debian package with `apt-get download` + `dpkg-deb -x` (no root needed
once `apt-get update` has run)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .cache import DataSourceError, atomic_copy

TIMEOUT_S = 600


def _run(cmd: list[str], cwd: Path) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except FileNotFoundError:
        raise DataSourceError(f"'{cmd[0]}' is not installed") from None
    except subprocess.TimeoutExpired:
        raise DataSourceError(f"'{' '.join(cmd)}' took longer than {TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise DataSourceError(f"'{' '.join(cmd)}' failed: {lines[-1] if lines else f'exit {proc.returncode}'}")


def _download(package: str, work: Path) -> None:
    """`apt-get download`; when the package lists are missing (a fresh machine) and we are root,
    run `apt-get update` once and try again."""
    try:
        _run(["apt-get", "download", package], work)
    except DataSourceError as e:
        stale = "Unable to locate package" in str(e) or "no installation candidate" in str(e)
        if not (stale and hasattr(os, "geteuid") and os.geteuid() == 0):
            if stale:
                raise DataSourceError(f"{e} (the apt package lists may be missing: run 'apt-get update')") from None
            raise
        _run(["apt-get", "update"], work)
        _run(["apt-get", "download", package], work)


@contextlib.contextmanager
def extracted_package(package: str) -> Iterator[Path]:
    """Download `package` and unpack it into a temporary directory; yields that root (the
    package's files lie under it as usr/share/...). Removed on exit."""
    with tempfile.TemporaryDirectory(prefix=f"lipkit-{package}-") as tmp:
        work = Path(tmp)
        _download(package, work)
        debs = sorted(work.glob(f"{package}_*.deb"))
        if not debs:
            raise DataSourceError(f"'apt-get download {package}' produced no .deb file")
        _run(["dpkg-deb", "-x", str(debs[-1]), "root"], work)
        yield work / "root"


def package_version(root: Path, package: str) -> str:
    """The version recorded in the unpacked package's changelog, or "unknown"."""
    import gzip

    log = root / "usr/share/doc" / package / "changelog.Debian.gz"
    try:
        first = gzip.decompress(log.read_bytes()).decode("utf-8", "replace").splitlines()[0]
        return first.split("(", 1)[1].split(")", 1)[0]
    except (OSError, IndexError, EOFError):
        return "unknown"


def fetch_from_debian(package: str, members: dict[str, str], dest: Path) -> None:
    """Download `package` and copy each member path (inside the package) to `dest / name`
    for `name, member in members.items()`. Raises DataSourceError with the cause."""
    with extracted_package(package) as root:
        for name, member in members.items():
            src = root / member
            if not src.is_file():
                raise DataSourceError(f"package {package} has no file /{member}")
            atomic_copy(src, dest / name)
