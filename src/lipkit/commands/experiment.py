"""lipkit experiment FILE.yaml --out DIR [--page FILE] [--summary-only]"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from lipkit.experiment import load_spec
    from lipkit.experiment.outputs import write_results
    from lipkit.experiment.runner import GridResult, grid_wall_seconds, load_record, needs_run, run_grid
    from lipkit.experiment.grid import build_cells

    spec = load_spec(args.file)
    cells = build_cells(spec)
    out = Path(args.out)
    if args.summary_only:  # the cells done with the spec as it is now; the others are listed
        done = [(c, r) for c in cells if (r := load_record(c, out)) is not None]
        current = [not needs_run(c, spec, r) for c, r in done]
        stale = [c.key for (c, _), ok in zip(done, current) if not ok]
        if stale:
            print(f"experiment: {len(stale)} cell(s) in {out} were run with another config or lack what "
                  f"a selection needs, and are left out (run without --summary-only to redo them): "
                  f"{', '.join(stale[:5])}{', ...' if len(stale) > 5 else ''}", file=sys.stderr)
        result = GridResult(records=[r for (_, r), ok in zip(done, current) if ok])
    else:
        result = run_grid(spec, out, cells)
        if result.stopped_by is not None:
            return 0
    command = "lipkit experiment " + " ".join(shlex.quote(a) for a in sys.argv[2:] if a != "--summary-only")
    written = write_results(spec, result.records, out, command, grid_wall_seconds(out, cells),
                            page=Path(args.page) if args.page else None, rewritten=args.summary_only)
    failed = sum("error" in r for r in result.records)
    print(f"experiment: {result.ran} cells run in {result.seconds / 60:.1f} min, {len(result.records)} "
          f"recorded{f', {failed} failed' if failed else ''}; wrote {out / 'results.md'}"
          + (f" and {args.page}" if args.page else "") + f" ({len(written)} files)")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("experiment", help="run a grid of training runs, evaluate each, judge claims",
                       description="Train and evaluate every (dataset, setting, batch size, seed) cell "
                                   "of FILE.yaml (see experiments/), skipping cells already done in "
                                   "DIR, then write DIR/summary.{json,md}, figures and DIR/results.md.")
    p.add_argument("file", metavar="FILE.yaml")
    p.add_argument("--out", required=True, help="directory of the grid (rerun to resume)")
    p.add_argument("--page", help="also write the results page here (figures go beside it)")
    p.add_argument("--summary-only", action="store_true",
                   help="train nothing: summarise the cells already in DIR")
    p.set_defaults(func=run)
