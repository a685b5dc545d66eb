"""lipkit export RUN --to open_clip|hf OUT"""
from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from lipkit.interop.export import export_run

    report = export_run(args.run, args.to, args.out)
    for note in report.notes:
        print(f"note: {note}")
    checked = f"; {report.agreement}" if report.agreement else ""
    print(f"exported {args.run} to {report.out} ({args.to}){checked}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a run's model as an open_clip or Hugging Face CLIP folder",
                       description="Write a run's model (a run, checkpoint or imported-model directory) as the "
                                   "folder open_clip.create_model_and_transforms('local-dir:OUT') or "
                                   "transformers.CLIPModel.from_pretrained(OUT) loads, and check it there.")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--to", required=True, choices=("open_clip", "hf"), help="the target library")
    p.add_argument("out", metavar="OUT", help="folder to write (must not exist yet, or be empty)")
    p.set_defaults(func=run)
