"""lipkit bench tiny|vit-b-32 [--rounds N] [--out FILE]: lipkit vs open_clip in one process.

open_clip lives in its own environment (.venv-peer, made by `make bench`): when it is not
importable here, the command re-runs itself with .venv-peer's Python."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lipkit.errors import UsageError

ARCH_NAMES = ("tiny", "vit-b-32")
PEER_PYTHON = Path(".venv-peer/bin/python")


def _open_clip_available() -> bool:
    from lipkit.bench.peer import PeerUnavailable, import_open_clip

    try:
        import_open_clip()
        return True
    except PeerUnavailable:
        return False


def run(args: argparse.Namespace) -> int:
    if not _open_clip_available():
        if not PEER_PYTHON.exists() or os.environ.get("LIPKIT_BENCH_REEXEC"):
            raise UsageError("open_clip is not importable and .venv-peer is missing: run `make bench` first")
        os.environ["LIPKIT_BENCH_REEXEC"] = "1"
        os.execv(str(PEER_PYTHON), [str(PEER_PYTHON), "-m", "lipkit", *sys.argv[1:]])

    from tqdm import tqdm

    from lipkit.bench.compare import compare

    bar = tqdm(total=args.rounds, desc=f"bench {args.arch}", unit="round")
    result = compare(args.arch, rounds=args.rounds, warmup=args.warmup, threads=args.threads,
                     full_captions=args.full_captions, progress=lambda done, total: bar.update(1))
    bar.close()
    print("\n".join(result.lines()))
    if args.out:
        Path(args.out).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="training throughput and memory against open_clip on the same architecture")
    p.add_argument("arch", choices=ARCH_NAMES)
    p.add_argument("--rounds", type=int, default=10, help="timed steps per trainer (alternating)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--full-captions", action="store_true",
                   help="captions fill the whole context (default: 10-20 tokens, like CC3M)")
    p.add_argument("--out", help="write the result as JSON")
    p.set_defaults(func=run)
