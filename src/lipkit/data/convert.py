"""Converting any pair source to WebDataset shards (`lipkit data convert`).

Images are copied as their original bytes (in-memory sources are encoded as PNG) after the same
checks training applies (decodable, under the pixel limit); every caption of an image goes into
its `.txt`, one per line; labels into `.cls`. Unusable samples are skipped and listed in
`DIR/PREFIX-skipped.json`.

Nothing is lost on the way: the source is opened and the output folder checked before anything
is written; shards are written into a hidden folder inside DIR and moved into place only once all
are complete, and the shards they replace (`--overwrite`) are deleted only then. Shards that are
the input of the conversion are never its output.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


from lipkit.config import SourceConfig
from lipkit.errors import UsageError
from lipkit.files import write_json
from lipkit.progress import progress_bar
from lipkit.writable import check_writable

from .cache import DataSourceError
from .images import DEFAULT_MAX_PIXELS, BadSampleError, open_image
from .pairs import PairDataset, decode_skips
from .shards import ShardStream, expand_pattern, shard_pattern, write_shards
from .sources import as_source_config, detect_format, open_source


@dataclass
class ConvertReport:
    samples: int = 0
    shards: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    report: Path | None = None

    @property
    def pattern(self) -> str:
        return shard_pattern(self.shards)


def _raw_samples(ds, skipped: list, max_pixels: int) -> Iterator[dict]:
    if isinstance(ds, PairDataset):
        skipped.extend(ds.skipped)
        for j in range(len(ds)):
            try:
                data, ext = ds.raw_image(j)
            except BadSampleError as e:
                skipped.append((e.where, e.reason))
                continue
            yield {"image_bytes": data, "ext": ext, "captions": ds.captions(j), "label": ds.records[j].label}
        return
    for s in ds:  # a ShardStream with decode=False
        skipped.extend(decode_skips(s.pop("skipped", None)))
        if "image_bytes" not in s:
            continue
        try:
            open_image(s["image_bytes"], name=s["key"], max_pixels=max_pixels)
        except BadSampleError as e:
            skipped.append((e.where, e.reason))
            continue
        yield s


def _own_files(out_dir: Path, prefix: str) -> list[Path]:
    """What a conversion with `prefix` writes into `out_dir`: PREFIX-NNNNNN.tar, PREFIX-skipped.json."""
    if not out_dir.is_dir():
        return []
    name = re.compile(rf"^{re.escape(prefix)}-(\d{{6}}\.tar|skipped\.json)$")
    return sorted(p for p in out_dir.iterdir() if name.match(p.name))


def _refuse_input_as_output(src: SourceConfig, out_dir: Path, prefix: str) -> None:
    src = as_source_config(src)
    if detect_format(src) != "webdataset":
        return
    name = re.compile(rf"^{re.escape(prefix)}-\d{{6}}\.tar$")
    target = out_dir.resolve()
    for shard in expand_pattern(src.path):
        path = Path(shard)
        if "://" not in shard and path.resolve().parent == target and name.match(path.name):
            raise UsageError(f"{out_dir}: the output ({prefix}-NNNNNN.tar) would replace the input shard {shard}; "
                             f"write to another folder or pass another --prefix")


def check_prefix(prefix: str) -> None:
    """The shards' name prefix is the start of a file name in the output folder: a name, not a path."""
    if not prefix or prefix.startswith(".") or "/" in prefix or "\\" in prefix or "\0" in prefix:
        raise UsageError(f"--prefix {prefix!r}: must be a plain file name (no folder, not starting with a dot): "
                         f"the shards go into the output folder as PREFIX-000000.tar")


def _move_into_place(staging: Path, out_dir: Path, replaced: list[Path]) -> list[Path]:
    """Move the finished files from `staging` into `out_dir` (each rename atomic: a reader sees
    an old shard or a new one, never part of one), then delete what they replace."""
    moved = []
    for f in sorted(staging.iterdir()):
        os.replace(f, out_dir / f.name)
        moved.append(out_dir / f.name)
    for old in replaced:
        if old not in moved:
            old.unlink(missing_ok=True)
    return moved


def convert_to_shards(src: SourceConfig, out_dir: Path, shard_size: int, *, prefix: str = "shards",
                      overwrite: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> ConvertReport:
    out_dir = Path(out_dir)
    check_prefix(prefix)
    _refuse_input_as_output(src, out_dir, prefix)
    existing = _own_files(out_dir, prefix)
    if any(p.suffix == ".tar" for p in existing) and not overwrite:
        count = sum(p.suffix == ".tar" for p in existing)
        raise UsageError(f"{out_dir} already holds {count} {prefix}-*.tar shard(s); pass --overwrite or choose another folder")
    check_writable(out_dir, "output folder")
    ds = open_source(src, None, max_pixels=max_pixels)
    if isinstance(ds, ShardStream):
        ds = ShardStream(src.path, None, shuffle=False, decode=False, caption_field=src.caption_column,
                         max_pixels=max_pixels, labels=True)
    report = ConvertReport()
    total = len(ds) if isinstance(ds, PairDataset) else None
    samples = progress_bar(_raw_samples(ds, report.skipped, max_pixels), total=total, desc="convert", unit="sample",
                   dynamic_ncols=True)

    def counted():
        for s in samples:
            report.samples += 1
            yield s

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(f".{prefix}-convert-*.tmp"):  # left by a conversion that was killed
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{prefix}-convert-", suffix=".tmp"))
    try:
        if not write_shards(counted(), staging, shard_size, prefix=prefix):
            first = f"; e.g. {report.skipped[0][0]}: {report.skipped[0][1]}" if report.skipped else ""
            raise DataSourceError(f"{src.path}: no usable sample to convert{first}; {out_dir} is unchanged")
        if report.skipped:
            data = [{"where": w, "reason": r} for w, r in report.skipped]
            write_json(staging / f"{prefix}-skipped.json", data)
        moved = _move_into_place(staging, out_dir, existing)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.shards = [p for p in moved if p.suffix == ".tar"]
    report.report = next((p for p in moved if p.suffix == ".json"), None)
    return report
