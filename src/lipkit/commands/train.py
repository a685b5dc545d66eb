"""lipkit train --config PRESET|FILE [--set k=v ...] --out RUN_DIR"""
from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from lipkit.config import load_config
    from lipkit.train import train

    cfg = load_config(args.config, args.set or [])
    result = train(cfg, args.out, overwrite=args.overwrite)
    print(
        f"trained {cfg.objective.name} for {result.steps} steps ({result.samples} samples) in "
        f"{result.seconds:.1f}s; final loss {result.final_loss:.4f}; run directory: {result.run_dir}"
    )
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from a preset or YAML config")
    p.add_argument("--config", required=True, help="preset name (see configs/) or path to a YAML file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.steps=100")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.set_defaults(func=run)
