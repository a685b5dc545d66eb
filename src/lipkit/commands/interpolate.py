"""lipkit interpolate A B OUT [--alpha α] [--alphas 0,0.25,...,1 [--dataset D] [--shift S]]"""
from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from lipkit.errors import UsageError
    from lipkit.files import write_json
    from lipkit.runs.interpolate import check_alpha, mix_notes, pair_runs, staged_mix

    alpha = check_alpha(args.alpha)
    if (args.dataset or args.shift or args.set) and not args.alphas:
        raise UsageError("--dataset, --shift and --set choose what the sweep evaluates: give --alphas too")
    alphas = None
    if args.alphas:
        from lipkit.eval.wise_ft import CURVE_FILE, curve_rows, parse_alphas, sweep

        alphas = parse_alphas(args.alphas)
    pair = pair_runs(args.a, args.b)
    curve = None
    with staged_mix(pair, alpha, args.out) as staging:
        if alphas:
            curve = sweep(staging, pair, alphas, dataset=args.dataset or "", shift=args.shift or "",
                          overrides=args.set or [], progress=not args.quiet)
            curve["alpha"] = alpha  # the mix OUT holds
            write_json(staging / CURVE_FILE, curve, indent=2)
    for note in mix_notes(pair, alpha):
        print(f"note: {note}")
    if curve is not None:
        from lipkit.eval.results import format_table

        rows = curve_rows(curve)
        print(format_table(rows, list(rows[0]), float_format="{:.4f}"))
        print(f"the curve: {args.out}/{CURVE_FILE} (lipkit report {args.out} draws it)")
    print(f"wrote {args.out}: (1 - alpha) * {args.a} + alpha * {args.b} with alpha = {alpha:g} "
          f"({len(pair.keys)} tensors)")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("interpolate", help="mix the weights of two runs (WiSE-FT) and sweep the mix",
                       description="Write OUT, a run directory with the weights (1 - alpha) * A + alpha * B of "
                                   "two runs (or checkpoints) of one architecture, e.g. a zero-shot model A and "
                                   "B fine-tuned from it (WiSE-FT). With --alphas, also evaluate zero-shot "
                                   "accuracy in distribution and on a shifted set at each alpha, and write "
                                   "the curve into OUT (lipkit report OUT draws it).")
    p.add_argument("a", metavar="A", help="run or checkpoint directory at alpha = 0 (e.g. the zero-shot model)")
    p.add_argument("b", metavar="B", help="run or checkpoint directory at alpha = 1 (e.g. the fine-tuned model)")
    p.add_argument("out", metavar="OUT", help="run directory to write (must not exist yet, or be empty)")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="the mix OUT holds: 0 is A, 1 is B (default: 0.5, WiSE-FT's choice without tuning)")
    p.add_argument("--alphas", metavar="A1,A2,...",
                   help="evaluate these mixes, e.g. 0,0.25,0.5,0.75,1, and write the curve into OUT")
    p.add_argument("--dataset", metavar="PATH_OR_NAME",
                   help="the in-distribution dataset of the sweep: a built-in (fashion-mnist, tuxpaint) "
                        "or a path, as lipkit eval --dataset reads it (default: B's eval.dataset)")
    p.add_argument("--shift", metavar="PATH_OR_NAME",
                   help="the shifted dataset of the sweep (the same classes under a distribution shift)")
    p.add_argument("--set", action="append", metavar="eval.KEY=VALUE",
                   help="an eval setting of the sweep, e.g. eval.test_limit=1000 or eval.split=validation")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
