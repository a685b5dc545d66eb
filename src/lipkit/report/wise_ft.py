"""The report's "Weight-space interpolation" section, from the curve `lipkit interpolate --alphas`
writes into its run (lipkit.eval.wise_ft): zero-shot accuracy against α, in distribution and under
the shift, and the shifted accuracy against the in-distribution one (WiSE-FT's figure), with the
numbers in a table."""
from __future__ import annotations

import base64
import html
from collections.abc import Sequence

from . import plots
from .collect import RunData

ALT = "weight-space interpolation"

CSS = """
.panel.curves { margin-top:14px; }
table.curve { border-collapse:collapse; font-size:14px; font-variant-numeric:tabular-nums; margin-top:14px; }
.curve th, .curve td { padding:5px 12px; border-bottom:1px solid var(--line); text-align:right; }
.curve th:first-child, .curve td:first-child { text-align:left; }
.curve thead th { font-weight:normal; color:var(--muted); }
.curve tr.held td { font-weight:bold; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _curved(runs: Sequence[RunData]) -> list[RunData]:
    return [r for r in runs if r.curve]


def _series(curve: dict, key: str) -> tuple[list[float], list[float]]:
    points = [p for p in curve["points"] if p.get(key) is not None]
    return [p["alpha"] for p in points], [p[key] for p in points]


def figure(runs: Sequence[RunData]) -> bytes | None:
    """Left: accuracy against α (solid: in distribution, dashed: shifted; dotted line: the α the
    run holds). Right, when there is a shifted set: shifted against in-distribution accuracy,
    each point labelled with its α."""
    have = _curved(runs)
    if not have:
        return None
    colour = plots.palette(runs)
    shifted = any(r.curve.get("shifted") for r in have)
    plt = plots.plt
    with plt.rc_context(plots.STYLE):
        fig, axes = plt.subplots(1, 2 if shifted else 1, figsize=(10, 3.4) if shifted else (5.4, 3.4),
                                 squeeze=False)
        ax = axes[0][0]
        for run in have:
            c, curve = colour[run.label], run.curve
            ax.plot(*_series(curve, "in_distribution"), "-o", color=c, lw=2, ms=4,
                    label=f"{run.label}: {curve['in_distribution']}")
            if curve.get("shifted"):
                ax.plot(*_series(curve, "shifted"), "--s", color=c, lw=1.8, ms=4,
                        label=f"{run.label}: {curve['shifted']} (shifted)")
            if isinstance(curve.get("alpha"), (int, float)):
                ax.axvline(curve["alpha"], color=c, lw=1, ls=":")
        ax.set_xlim(-0.03, 1.03)
        ax.set_xlabel("α (0: run A, 1: run B)")
        ax.set_ylabel("zero-shot top-1")
        ax.set_title("accuracy along (1 − α)·A + α·B")
        ax.legend(fontsize=8)
        if shifted:
            ax = axes[0][1]
            for run in have:
                curve = run.curve
                if not curve.get("shifted"):
                    continue
                points = curve["points"]
                xs, ys = [p["in_distribution"] for p in points], [p["shifted"] for p in points]
                ax.plot(xs, ys, "-o", color=colour[run.label], lw=1.8, ms=4, label=run.label)
                for p in points:
                    ax.annotate(f"{p['alpha']:g}", (p["in_distribution"], p["shifted"]), fontsize=7.5,
                                color=plots.INK, xytext=(4, 3), textcoords="offset points")
            ax.set_xlabel("in-distribution zero-shot top-1")
            ax.set_ylabel("shifted zero-shot top-1")
            ax.set_title("under shift vs in distribution (labels: α)")
            ax.legend(fontsize=8)
        fig.tight_layout()
        return plots._png(fig)


def _number(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def table(runs: Sequence[RunData]) -> str:
    """Each run's curve: one row per α; the α the run holds in bold."""
    parts = []
    for run in _curved(runs):
        curve = run.curve
        shift = curve.get("shifted")
        head = (f"<th>{_e(run.label)}: α</th><th>{_e(curve['in_distribution'])}</th>"
                + (f"<th>{_e(shift)} (shifted)</th>" if shift else ""))
        rows = []
        for p in curve["points"]:
            held = ' class="held"' if p["alpha"] == curve.get("alpha") else ""
            cells = f"<td>{p['alpha']:g}</td><td>{_number(p['in_distribution'])}</td>"
            cells += f"<td>{_number(p['shifted'])}</td>" if shift else ""
            rows.append(f"<tr{held}>{cells}</tr>")
        parts.append(f'<table class="curve"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')
    if not parts:
        return ""
    return (f'<div class="panel curves">{"".join(parts)}<div class="hint">Zero-shot top-1 of each mix; bold: the α '
            "the run holds (<code>--alpha</code>).</div></div>")


def section_content(runs: Sequence[RunData]) -> str:
    png = figure(runs)
    if png is None:
        return ""
    img = f'<img alt="{ALT}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
    shown = (f'<figure class="panel">{img}<figcaption>Each point is the model (1 − α)·A + α·B '
             "evaluated zero-shot (<code>lipkit interpolate A B OUT --alphas …</code>); α = 0 is run A "
             "(e.g. the zero-shot model), α = 1 run B (fine-tuned from it).</figcaption></figure>")
    return shown + table(runs)

