"""lipkit eval RUN_DIR --tasks ... --out FILE"""
from __future__ import annotations

import argparse
from pathlib import Path

from lipkit.errors import UsageError

EVAL_TASKS = ("zeroshot", "linear")


def run(args: argparse.Namespace) -> int:
    from lipkit.eval.runner import evaluate_run, print_results

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in EVAL_TASKS]
    if unknown:
        raise UsageError(f"--tasks: unknown task(s) {', '.join(unknown)}; available: {', '.join(EVAL_TASKS)}")
    records = evaluate_run(Path(args.run_dir), tasks, out=Path(args.out) if args.out else None)
    print_results(records)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a run directory")
    p.add_argument("run_dir")
    p.add_argument("--tasks", default=",".join(EVAL_TASKS), help=f"comma-separated: {', '.join(EVAL_TASKS)}")
    p.add_argument("--out", help="JSON file for the results (CLIP_benchmark schema)")
    p.set_defaults(func=run)
