"""Fetch files out of a Debian package with `apt-get download` + `dpkg-deb -x` (no root needed
once `apt-get update` has run)."""
from __future__ import annotations

import subprocess
import tempfile
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


def fetch_from_debian(package: str, members: dict[str, str], dest: Path) -> None:
    """Download `package` and copy each member path (inside the package) to `dest / name`
    for `name, member in members.items()`. Raises DataSourceError with the cause."""
    with tempfile.TemporaryDirectory(prefix=f"lipkit-{package}-") as tmp:
        work = Path(tmp)
        _run(["apt-get", "download", package], work)
        debs = sorted(work.glob(f"{package}_*.deb"))
        if not debs:
            raise DataSourceError(f"'apt-get download {package}' produced no .deb file")
        _run(["dpkg-deb", "-x", str(debs[-1]), "root"], work)
        for name, member in members.items():
            src = work / "root" / member
            if not src.is_file():
                raise DataSourceError(f"package {package} has no file /{member}")
            atomic_copy(src, dest / name)
