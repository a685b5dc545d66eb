"""lipkit import open_clip:ARCH[:WEIGHTS_FILE]|open_clip:DIR|hf:PATH OUT (module name: `import` is a keyword)"""
from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from lipkit.interop.importer import import_model

    report = import_model(args.source, args.out)
    for note in report.notes:
        print(f"note: {note}")
    print(f"imported {args.source} to {report.out}; {report.agreement}. Continue training it with: "
          f"lipkit train --init {report.out} --set objective.name=xclip --out RUN "
          "(new heads start fresh)")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("import", help="write an open_clip or Hugging Face CLIP model as a lipkit run directory",
                       description="Read a CLIP model and write it as a lipkit run directory that lipkit eval, "
                                   "lipkit.load and lipkit train --init read. Nothing is downloaded: open_clip:ARCH "
                                   "without weights is a random initialisation.")
    p.add_argument("source", metavar="open_clip:ARCH[:WEIGHTS_FILE]|open_clip:DIR|hf:PATH")
    p.add_argument("out", metavar="OUT", help="run directory to write (must not exist yet, or be empty)")
    p.set_defaults(func=run)
