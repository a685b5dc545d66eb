"""lipkit demo: train CLIP and xCLIP on Fashion-MNIST, evaluate both, print a table."""
from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from lipkit.demo import run_demo

    run_demo(Path(args.out), steps=args.steps)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="train CLIP and xCLIP on Fashion-MNIST, evaluate both, print a table")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--steps", type=int, default=None, help="shorten each training run")
    p.set_defaults(func=run)
