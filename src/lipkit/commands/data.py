"""lipkit data fetch NAME [--force] | lipkit data convert SRC --to shards DIR --shard-size N"""
from __future__ import annotations

import argparse

from lipkit.data.builtins import BUILTIN_SOURCES


def _fetch(args: argparse.Namespace) -> int:
    where, n = BUILTIN_SOURCES[args.name].fetch(args.force)
    print(f"{args.name}: {n} items in {where}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lipkit.config import SourceConfig
    from lipkit.data.convert import convert_to_shards
    from lipkit.errors import UsageError

    if args.to != "shards":
        raise UsageError(f"--to {args.to}: only 'shards' (WebDataset tar files) can be written")
    if args.shard_size < 1:
        raise UsageError(f"--shard-size must be >= 1, got {args.shard_size}")
    src = SourceConfig(path=args.src, format=args.format, image_column=args.image_column,
                       caption_column=args.caption_column, label_column=args.label_column, split=args.split)
    report = convert_to_shards(src, Path(args.dir), args.shard_size, prefix=args.prefix, overwrite=args.overwrite)
    print(f"wrote {report.samples} samples in {len(report.shards)} shard(s): {report.pattern}"
          + (f"; skipped {len(report.skipped)} unusable (listed in {report.report})" if report.skipped else ""))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="fetch built-in data sources, convert pairs to WebDataset shards")
    dsub = p.add_subparsers(dest="data_command", required=True)

    f = dsub.add_parser("fetch", help="download and prepare a built-in source into $LIPKIT_CACHE")
    f.add_argument("name", choices=list(BUILTIN_SOURCES))
    f.add_argument("--force", action="store_true", help="fetch again even when cached")
    f.set_defaults(func=_fetch)

    c = dsub.add_parser("convert", help="write any pair source as WebDataset tar shards",
                        description="SRC: a folder of images with .txt captions, a .csv/.tsv/.jsonl file, "
                                    "shards, or a built-in source (NAME[:SPLIT]).")
    c.add_argument("src")
    c.add_argument("--to", required=True, help="output kind: shards")
    c.add_argument("dir", help="output folder")
    c.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    c.add_argument("--prefix", default="shards", help="shard file names: PREFIX-000000.tar, ...")
    c.add_argument("--format", default="auto", choices=["auto", "builtin", "folder", "csv", "tsv", "jsonl", "webdataset"])
    c.add_argument("--image-column", default="image")
    c.add_argument("--caption-column", default="caption")
    c.add_argument("--label-column", default="")
    c.add_argument("--split", default="", help="split of a built-in source")
    c.add_argument("--overwrite", action="store_true", help="replace shards already in DIR")
    c.set_defaults(func=_convert)
