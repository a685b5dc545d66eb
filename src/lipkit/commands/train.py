"""lipkit train --config PRESET|FILE [--set k=v ...] --out RUN_DIR [--resume latest|PATH] [--init DIR]"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _config(args: argparse.Namespace):
    """(config, what to resume): --config if given; when resuming without one, the checkpoint's own
    config (plus --set), and that checkpoint (which the trainer verifies once more when it holds
    the run's lock, so a checkpoint changed in between is not trusted), or, with no checkpoint yet,
    the config.yaml of the attempt in --out; with --init, the init model's config with its heads
    left to the objective (plus --set)."""
    from lipkit.config import ConfigError, load_config
    from lipkit.runs.directory import CONFIG_FILE, resolve_resume

    if args.init is not None and not (Path(args.init) / CONFIG_FILE).is_file():
        what = "not a run or `lipkit import` directory (no config.yaml)" if Path(args.init).is_dir() else \
            "no such directory"
        raise ConfigError(f"--init {args.init}: {what}")
    if args.config is not None:
        return load_config(args.config, args.set or []), args.resume
    if args.init is not None:
        cfg = load_config(str(Path(args.init) / CONFIG_FILE), ["model.heads=[]"] + (args.set or []), recorded=True)
        return cfg, args.resume
    if args.resume is None:
        raise ConfigError("--config is required (a preset name or a YAML file) unless --resume or --init is given")
    checkpoint = resolve_resume(args.resume, args.out)
    if checkpoint is not None:
        return load_config(str(checkpoint / CONFIG_FILE), args.set or [], recorded=True), checkpoint
    attempt = Path(args.out) / CONFIG_FILE
    if attempt.is_file():  # an attempt that ended before its first checkpoint: started again with its own config
        return load_config(str(attempt), args.set or [], recorded=True), args.resume
    raise ConfigError(f"--resume {args.resume}: {args.out} holds no checkpoint and no config.yaml yet; pass --config "
                      f"(a preset or a YAML file) to start the run there: the same command then also continues it")


def run(args: argparse.Namespace) -> int:
    from lipkit import distributed
    from lipkit.train import train

    cfg, resume = _config(args)
    result = train(cfg, args.out, overwrite=args.overwrite, resume=resume, init=args.init)
    if distributed.rank() != 0:
        return 0
    if result.already_finished:
        print(f"nothing to train: {result.checkpoint} is at step {result.steps}, which is train.steps; "
              f"pass --set train.steps=N with N > {result.steps} to train further")
        return 0
    if result.stopped_by is not None:
        launcher = " (under torchrun, with the same torchrun options)" if distributed.world_size() > 1 else ""
        print(
            f"stopped by {result.stopped_by} after step {result.steps} of {cfg.train.steps}; checkpoint "
            f"{result.checkpoint}. Resume with: lipkit train --out {result.run_dir} --resume latest{launcher}",
            file=sys.stderr,
        )
        return 0
    resumed = f" (resumed at step {result.start_step})" if result.start_step else ""
    bad = f"; {result.bad_steps} non-finite steps skipped" if result.bad_steps else ""
    print(
        f"trained {cfg.objective.name} for {result.steps} steps ({result.samples} samples){resumed} in "
        f"{result.seconds:.1f}s; final loss {result.final_loss:.4f}{bad}; run directory: {result.run_dir}"
    )
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from a preset or YAML config")
    p.add_argument("--config", help="preset name (see configs/) or path to a YAML file; "
                   "optional with --resume (the checkpoint's config is used)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.steps=100")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run already in --out (the old one is kept until the new one's first checkpoint)")
    p.add_argument("--resume", metavar="latest|PATH",
                   help="continue from the newest intact checkpoint in --out (latest; from scratch when there is "
                        "none yet), or from a checkpoint or run directory")
    p.add_argument("--init", metavar="DIR",
                   help="start a new run from the weights and tokenizer of a run or `lipkit import` directory "
                        "(fresh optimizer; heads the objective adds start fresh); without --config, DIR's config")
    p.set_defaults(func=run)
