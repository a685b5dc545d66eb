"""`lipkit train | eval | demo`. Errors a user can fix print one line and exit 2."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EVAL_TASKS = ("zeroshot", "linear")


def _cmd_train(args: argparse.Namespace) -> int:
    from lipkit.config import load_config
    from lipkit.train import train

    cfg = load_config(args.config, args.set or [])
    result = train(cfg, args.out, overwrite=args.overwrite)
    print(
        f"trained {cfg.objective.name} for {result.steps} steps ({result.samples} samples) in "
        f"{result.seconds:.1f}s; final loss {result.final_loss:.4f}; run directory: {result.run_dir}"
    )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from lipkit.eval.runner import evaluate_run, print_results

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in EVAL_TASKS]
    if unknown:
        raise _UsageError(f"--tasks: unknown task(s) {', '.join(unknown)}; available: {', '.join(EVAL_TASKS)}")
    records = evaluate_run(Path(args.run_dir), tasks, out=Path(args.out) if args.out else None)
    print_results(records)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from lipkit.demo import run_demo

    run_demo(Path(args.out), steps=args.steps)
    return 0


class _UsageError(ValueError):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lipkit", description="Language-image pre-training and evaluation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a preset or YAML config")
    p.add_argument("--config", required=True, help="preset name (see configs/) or path to a YAML file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.steps=100")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a run directory")
    p.add_argument("run_dir")
    p.add_argument("--tasks", default=",".join(EVAL_TASKS), help=f"comma-separated: {', '.join(EVAL_TASKS)}")
    p.add_argument("--out", help="JSON file for the results (CLIP_benchmark schema)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("demo", help="train CLIP and xCLIP on Fashion-MNIST, evaluate both, print a table")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--steps", type=int, default=None, help="shorten each training run")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from lipkit.checkpoint import CheckpointError
    from lipkit.config import ConfigError
    from lipkit.data import DataSourceError
    from lipkit.train import NonFiniteLossError, RunDirError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, CheckpointError, DataSourceError, NonFiniteLossError, RunDirError, _UsageError) as e:
        print(f"lipkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lipkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
