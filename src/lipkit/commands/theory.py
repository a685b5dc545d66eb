"""lipkit theory STUDY|all --out DIR [--config FILE] [--set k=v ...] [--workers N]"""
from __future__ import annotations

import argparse
from pathlib import Path

from lipkit.errors import UsageError

# Mirrors lipkit.theory.studies.STUDIES (kept literal so `lipkit --help` stays cheap).
STUDY_NAMES = ("margin-vs-temperature", "regularizer-sweep", "square-vs-clip", "top-r", "batch-size")


def run(args: argparse.Namespace) -> int:
    from lipkit.theory import load_theory_config, run_studies

    if args.study != "all" and args.study not in STUDY_NAMES:
        raise UsageError(f"theory: unknown study '{args.study}'; available: {', '.join(STUDY_NAMES)}, all")
    if args.workers < 1:
        raise UsageError(f"--workers: must be >= 1, got {args.workers}")
    cfg = load_theory_config(args.config, args.set or [])
    names = list(STUDY_NAMES) if args.study == "all" else [args.study]
    result = run_studies(names, cfg, Path(args.out), workers=args.workers, progress=not args.no_progress)
    print(
        f"theory {args.study}: {result.runs_trained} runs in {result.wall_seconds:.1f}s wall, "
        f"{result.cpu_seconds:.1f}s CPU ({args.workers} worker{'s' if args.workers > 1 else ''}); wrote "
        + ", ".join(str(p) for p in result.files)
    )
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("theory", help="synthetic studies of Chen et al. (margin, temperature, square loss, ...)")
    p.add_argument("study", help=f"one of: {', '.join(STUDY_NAMES)}, all")
    p.add_argument("--out", required=True, help="directory for STUDY.json and STUDY.png")
    p.add_argument("--config", help="YAML file of theory-lab settings (data, encoder, train, objective, studies)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. studies.seeds=5")
    p.add_argument("--workers", type=int, default=1, help="processes that train runs in parallel (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
