"""lipkit report RUN_DIR|RESULTS.json ... --out report.html"""
from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from lipkit.report import build_report

    path = build_report(args.runs, args.out, title=args.title)
    print(f"wrote {path}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="an HTML page with plots comparing evaluated runs",
                       description="A self-contained HTML report: training curves from metrics.jsonl and "
                                   "the results of 'lipkit eval --out RUN/results.json'.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR|RESULTS.json",
                   help="run directories, results files, or 'lipkit eval --out-dir' folders")
    p.add_argument("--out", default="report.html", help="the HTML file to write (default: report.html)")
    p.add_argument("--title", default="lipkit report")
    p.set_defaults(func=run)
