"""lipkit bench WHAT: speed and memory.

  tiny | vit-b-32    lipkit vs open_clip training steps on the same architecture, alternating
  xclip-ratio        xCLIP step time / CLIP step time (tiny)
  data-share         share of a fashion-tiny step spent waiting for data
  eval-throughput    encode_image / encode_text per second (with open_clip when available)
  max-batch          largest batch within --memory-gib for --config, and accumulation steps
  scaling            predicted step time and scaling efficiency of --config on --gpus GPUs (docs/scaling.md);
                     --doc PATH writes that page (ViT-B/16 CLIP and xCLIP, and the model checked on gloo)

open_clip lives in its own environment (.venv-peer, made by `make bench`): the comparisons that
need it re-run themselves with .venv-peer's Python when open_clip is not importable here."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lipkit.errors import UsageError

COMPARE = ("tiny", "vit-b-32")
WHAT = (*COMPARE, "xclip-ratio", "data-share", "eval-throughput", "max-batch", "scaling")
PEER_PYTHON = Path(".venv-peer/bin/python")


def _open_clip_available() -> bool:
    from lipkit.interop.gateway import OpenClipUnavailable, import_open_clip

    try:
        import_open_clip()
        return True
    except OpenClipUnavailable:
        return False


def _reexec_in_peer_env() -> None:
    if not PEER_PYTHON.exists() or os.environ.get("LIPKIT_BENCH_REEXEC"):
        raise UsageError("open_clip is not importable and .venv-peer is missing: run `make bench` first")
    os.environ["LIPKIT_BENCH_REEXEC"] = "1"
    os.execv(str(PEER_PYTHON), [str(PEER_PYTHON), "-m", "lipkit", *sys.argv[1:]])


def _print_dict(result: dict) -> None:
    for k, v in result.items():
        print(f"  {k:24s} {v:.4g}" if isinstance(v, float) else f"  {k:24s} {v}")


def run(args: argparse.Namespace) -> int:
    needs_peer = args.what in COMPARE or (args.what == "eval-throughput" and PEER_PYTHON.exists())
    if needs_peer and not _open_clip_available():
        _reexec_in_peer_env()

    if args.what in COMPARE:
        from lipkit.bench.compare import compare
        from lipkit.progress import progress_bar

        bar = progress_bar(total=args.rounds, desc=f"bench {args.what}", unit="round")
        result = compare(args.what, rounds=args.rounds, warmup=args.warmup, threads=args.threads,
                         full_captions=args.full_captions, progress=lambda done, total: bar.update(1))
        bar.close()
        print("\n".join(result.lines()))
        out = result.to_dict()
    elif args.what == "scaling":
        from lipkit.bench.scaling_page import run_scaling

        out = run_scaling(args)
    elif args.what == "max-batch":
        from lipkit.bench.max_batch import plan

        if not args.config or not args.memory_gib:
            raise UsageError("max-batch needs --config and --memory-gib")
        result = plan(args.config, args.memory_gib, args.target_batch, args.set or [])
        print("\n".join(result.lines()))
        out = vars(result)
    else:
        from lipkit.bench import speed_figures

        if args.what == "xclip-ratio":
            out = speed_figures.xclip_step_ratio(rounds=args.rounds, warmup=args.warmup, threads=args.threads)
        elif args.what == "data-share":
            out = speed_figures.data_wait_share(threads=args.threads)
        else:
            out = speed_figures.embedding_throughput(threads=args.threads, with_peer=_open_clip_available())
        print(args.what)
        _print_dict(out)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="speed and memory benchmarks (against open_clip where it applies)")
    p.add_argument("what", choices=WHAT)
    p.add_argument("--rounds", type=int, default=10, help="timed steps per trainer (alternating)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--full-captions", action="store_true",
                   help="captions fill the whole context (default: 10-20 tokens, like CC3M)")
    p.add_argument("--config", help="max-batch, scaling: preset or YAML file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="max-batch, scaling: config overrides")
    p.add_argument("--gpus", default="8,64,512,1024", help="scaling: GPU counts, comma-separated")
    p.add_argument("--batch", type=int, default=0, help="scaling: global batch (default: train.batch_size)")
    p.add_argument("--accelerator", default="h100", help="scaling: accelerator and network figures (h100)")
    p.add_argument("--precision", default="", help="scaling: fp32|tf32|bf16|fp16|fp64 (default: train.precision)")
    p.add_argument("--mfu", type=float, default=0.4, help="scaling: assumed model-FLOPs utilisation")
    p.add_argument("--network-latency-us", type=float, help="scaling: one ring step between nodes (default 5)")
    p.add_argument("--doc", help="scaling: write docs/scaling.md's page to this path (measures on gloo, ~1 min)")
    p.add_argument("--memory-gib", type=float, help="max-batch: memory budget")
    p.add_argument("--target-batch", type=int, default=0, help="max-batch: effective batch to reach by accumulation")
    p.add_argument("--out", help="write the result as JSON")
    p.set_defaults(func=run)
