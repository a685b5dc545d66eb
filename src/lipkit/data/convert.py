"""Converting any pair source to WebDataset shards (`lipkit data convert`).

Images are copied as their original bytes (in-memory sources are encoded as PNG) after the same
checks training applies (decodable, under the pixel limit); every caption of an image goes into
its `.txt`, one per line; labels into `.cls`. Unusable samples are skipped and listed in
`DIR/PREFIX-skipped.json`.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from lipkit.config import SourceConfig
from lipkit.errors import UsageError

from .images import DEFAULT_MAX_PIXELS, BadSampleError, open_image
from .pairs import PairDataset, decode_skips
from .shards import ShardStream, shard_pattern, write_shards
from .sources import open_source


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


def convert_to_shards(src: SourceConfig, out_dir: Path, shard_size: int, *, prefix: str = "shards",
                      overwrite: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> ConvertReport:
    from lipkit.checkpoint import atomic_write

    existing = sorted(out_dir.glob(f"{prefix}-*.tar")) if out_dir.is_dir() else []
    if existing and not overwrite:
        raise UsageError(f"{out_dir} already holds {len(existing)} {prefix}-*.tar shard(s); pass --overwrite or choose another folder")
    for p in existing:
        p.unlink()
    ds = open_source(src, None, max_pixels=max_pixels)
    if isinstance(ds, ShardStream):
        ds = ShardStream(src.path, None, shuffle=False, decode=False, caption_field=src.caption_column,
                         max_pixels=max_pixels, labels=True)
    report = ConvertReport()
    total = len(ds) if isinstance(ds, PairDataset) else None
    samples = tqdm(_raw_samples(ds, report.skipped, max_pixels), total=total, desc="convert", unit="sample",
                   dynamic_ncols=True)

    def counted():
        for s in samples:
            report.samples += 1
            yield s

    report.shards = write_shards(counted(), out_dir, shard_size, prefix=prefix)
    if report.skipped:
        report.report = out_dir / f"{prefix}-skipped.json"
        data = [{"where": w, "reason": r} for w, r in report.skipped]
        atomic_write(report.report, lambda p: p.write_text(json.dumps(data, indent=1)))
    return report
