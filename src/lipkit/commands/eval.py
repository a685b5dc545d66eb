"""lipkit eval RUN_DIR|open_clip:ARCH[:PRETRAINED] [--dataset PATH_OR_NAME ...] --tasks ... --out FILE"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from lipkit.eval.registry import DEFAULT_TASKS, TASKS, parse_tasks  # without torch: `lipkit --help` stays cheap


def run(args: argparse.Namespace) -> int:
    from lipkit.eval.runner import evaluate_spec, summary_table
    from lipkit.writable import check_writable

    tasks = parse_tasks(args.tasks)
    # before any task runs: a read-only or mistyped output would otherwise fail only at the end
    if args.out:
        check_writable(Path(args.out).parent, "--out")
    if args.out_dir:
        check_writable(args.out_dir, "--out-dir")
    overrides = list(args.set or [])
    if args.masks:
        from lipkit.eval.errors import EvalError

        if not Path(args.masks).is_dir():
            raise EvalError(f"--masks {args.masks}: no such folder")
        overrides.append(f"eval.emergent.masks={json.dumps(args.masks)}")  # a quoted YAML string
    out = evaluate_spec(args.model, tasks, overrides=overrides,
                        out_file=Path(args.out) if args.out else None,
                        out_dir=Path(args.out_dir) if args.out_dir else None,
                        progress=not args.quiet, datasets=args.dataset or [],
                        dataset_train=args.dataset_train or "", shift=args.shift or "")
    print(summary_table(out))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a run directory or an open_clip model",
                       description="Evaluate a lipkit run directory or open_clip:ARCH[:PRETRAINED] "
                                   "on built-in datasets or your own (class folders, a CSV/TSV/JSONL "
                                   "table, WebDataset shards). Settings are the eval.* config fields "
                                   "(the run's own, or the defaults for open_clip), changed with --set.")
    p.add_argument("model", metavar="RUN_DIR|open_clip:ARCH[:PRETRAINED]")
    p.add_argument("--dataset", action="append", metavar="PATH_OR_NAME",
                   help="a built-in dataset (fashion-mnist, tuxpaint) or a path; repeat for several "
                        "(NAME=PATH names its records); default: eval.dataset")
    p.add_argument("--dataset-train", metavar="PATH_OR_NAME",
                   help="train the linear probe and the kNN bank on this dataset's images (its train "
                        "split, or all of it) instead of each dataset's own")
    p.add_argument("--shift", metavar="PATH_OR_NAME",
                   help="a dataset with the same classes as a shifted test set: the ood task reports "
                        "clean, shifted and drop")
    p.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                   help=f"comma-separated: {', '.join(TASKS)} (default: all but emergent)")
    p.add_argument("--masks", metavar="DIR",
                   help="foreground masks for the emergent task's localisation, one per test image: "
                        "DIR/<image path>.png, e.g. DIR/cat/0001.png for photos/cat/0001.jpg")
    p.add_argument("--out", help="JSON file: a list of records in CLIP_benchmark's schema "
                                 "(curves and histograms go to FILE.details.json)")
    p.add_argument("--out-dir", help="folder: one CLIP_benchmark JSON per (model, dataset, task)")
    p.add_argument("--set", action="append", metavar="eval.KEY=VALUE",
                   help="override an eval setting, e.g. eval.test_limit=1000 or eval.label_column=class")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
