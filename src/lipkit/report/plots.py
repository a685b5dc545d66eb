"""The report's figures, each a PNG (bytes) drawn with matplotlib's Agg backend.

Every figure gives each run the same colour (`palette`), so a reader learns it once. A figure
function returns None when no run has what it shows.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .collect import RunData  # noqa: E402

COLOURS = ["#3366cc", "#e07b39", "#2ca58d", "#c4455d", "#8e6cc2", "#7f7f7f", "#b8a32d", "#3fa7d6"]
INK, MUTED, GRID = "#1f2933", "#616e7c", "#e4e7eb"
DPI = 110

STYLE = {
    "font.family": "DejaVu Sans", "font.size": 9.5, "axes.edgecolor": MUTED,
    "axes.labelcolor": INK, "axes.titlesize": 10.5, "axes.titleweight": "bold",
    "axes.titlecolor": INK, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.color": GRID, "grid.linewidth": 0.8, "xtick.color": MUTED,
    "ytick.color": MUTED, "legend.frameon": False, "figure.facecolor": "white",
}


def palette(runs: Sequence[RunData]) -> dict[str, str]:
    return {r.label: COLOURS[i % len(COLOURS)] for i, r in enumerate(runs)}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _smooth(y: np.ndarray, n: int) -> np.ndarray:
    """Trailing moving average over n points (n = 1: unchanged)."""
    if n <= 1 or len(y) < n:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    head = c[1:n] / np.arange(1, n)
    return np.concatenate([head, (c[n:] - c[:-n]) / n])


def _series(log: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], r[key]) for r in log
           if isinstance(r.get(key), (int, float)) and isinstance(r.get("step"), (int, float))]
    if not pts:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*pts)
    return np.asarray(steps, float), np.asarray(values, float)


def training_curves(runs: Sequence[RunData]) -> bytes | None:
    """Total loss, each loss term, and the collapse diagnostic (the images' batch mutual
    information, 0 for either collapse) or the lr, against the step."""
    logged = [r for r in runs if r.log]
    if not logged:
        return None
    colour = palette(runs)
    terms = sorted({k for r in logged for k in r.log[-1] if k.endswith("_loss")})
    usage = sorted({k for r in logged for k in r.log[-1] if k.endswith("image_mi_ratio")})
    third = ("image_mi_ratio", usage) if usage else ("lr", ["lr"])
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
        for run in logged:
            smooth = max(1, len(run.log) // 30)
            steps, loss = _series(run.log, "loss")
            axes[0].plot(steps, loss, color=colour[run.label], alpha=0.25, lw=1)
            axes[0].plot(steps, _smooth(loss, smooth), color=colour[run.label], lw=2,
                         label=f"{run.label} ({run.objective})")
            for i, term in enumerate(terms):
                steps, y = _series(run.log, term)
                if len(y):
                    axes[1].plot(steps, _smooth(y, smooth), color=colour[run.label], lw=1.8,
                                 ls=["-", "--", ":", "-."][i % 4],
                                 label=f"{run.label}: {term.replace('_loss', '')}")
            for key in third[1]:
                steps, y = _series(run.log, key)
                if len(y):
                    axes[2].plot(steps, y, color=colour[run.label], lw=1.8, label=run.label)
        axes[0].set_title("training loss")
        axes[1].set_title("loss terms")
        axes[2].set_title("batch mutual information I/log min(N, K), images" if usage else "learning rate")
        if usage:
            axes[2].set_ylim(0, 1.02)
        for ax in axes:
            ax.set_xlabel("step")
        axes[0].legend(fontsize=8.5)
        if terms:
            axes[1].legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                           ncol=2 if len(terms) * len(logged) > 2 else 1)
        fig.tight_layout()
        return _png(fig)


def grouped_bars(runs: Sequence[RunData], groups: Sequence[tuple[str, ...]], title: str,
                 ylabel: str = "", ylim: tuple[float, float] | None = (0, 1)) -> bytes | None:
    """One group of bars per (label, task, metric key[, dataset suffix]), one bar per run, the
    values printed on top."""
    values = [[run.metric(*g[1:]) for run in runs] for g in groups]
    keep = [i for i, vs in enumerate(values) if any(v is not None for v in vs)]
    if not keep:
        return None
    colour = palette(runs)
    n = len(runs)
    width = min(0.8 / n, 0.3)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(3.4, 1.3 * len(keep) * max(1.0, n / 2) + 1.2), 3.2))
        for j, run in enumerate(runs):
            xs = np.arange(len(keep)) + (j - (n - 1) / 2) * width
            ys = [values[i][j] for i in keep]
            bars = ax.bar(xs, [y if y is not None else 0 for y in ys], width * 0.92,
                          color=colour[run.label], label=run.label)
            for bar, y in zip(bars, ys):
                if y is not None:
                    ax.annotate(f"{y:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                ha="center", va="bottom", fontsize=8, color=INK,
                                xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(np.arange(len(keep)), [groups[i][0] for i in keep])
        ax.grid(axis="x", visible=False)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5)
        fig.tight_layout()
        return _png(fig)


def recall_curves(runs: Sequence[RunData]) -> bytes | None:
    """Recall@K for K = 1..50, image -> text and text -> image."""
    have = [(r, d) for r in runs for k, d in r.details.items() if k.endswith("/zeroshot_retrieval")]
    if not have:
        return None
    colour = palette(runs)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.3), sharey=True)
        for ax, key, title in ((axes[0], "text_retrieval_recall_curve", "image → text"),
                               (axes[1], "image_retrieval_recall_curve", "text → image")):
            for run, d in have:
                curve = d.get(key)
                if curve:
                    ks = np.arange(1, len(curve) + 1)
                    ax.plot(ks, curve, color=colour[run.label], lw=2, label=run.label)
                    ax.scatter([k for k in (1, 5, 10) if k <= len(curve)],
                               [curve[k - 1] for k in (1, 5, 10) if k <= len(curve)],
                               color=colour[run.label], s=18, zorder=3)
            ax.set_xscale("log")
            ax.set_xticks([1, 2, 5, 10, 20, 50], ["1", "2", "5", "10", "20", "50"])
            ax.set_xlabel("K")
            ax.set_title(f"{title}: recall@K")
            ax.set_ylim(0, 1.02)
        axes[0].set_ylabel("share of queries with a hit in the top K")
        axes[0].legend(fontsize=8.5)
        fig.tight_layout()
        return _png(fig)


def corruption_curves(runs: Sequence[RunData]) -> bytes | None:
    """Accuracy against corruption severity (0 = clean), one panel per corruption; solid lines
    for zero-shot, dashed for the linear probe."""
    found = []
    for run in runs:
        for key, d in run.details.items():
            if key.endswith("/ood_classification") and d.get("corruptions"):
                record = next((r for r in run.records if f"{r['dataset']}/{r['task']}" == key), None)
                if record:
                    found.append((run, d, record["metrics"]))
    if not found:
        return None
    corruptions = list(dict.fromkeys(c for _, d, _ in found for c in d["corruptions"]))
    colour = palette(runs)
    cols = min(4, len(corruptions))
    rows = math.ceil(len(corruptions) / cols)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 2.8 * rows), sharey=True,
                                 squeeze=False)
        for ax, corruption in zip(axes.flat, corruptions):
            for run, d, m in found:
                sev = [s for s in d["severities"] if f"zeroshot_{corruption}_s{s}_acc1" in m
                       or f"linear_{corruption}_s{s}_acc1" in m]
                for method, ls in (("zeroshot", "-"), ("linear", "--")):
                    ys = [m.get(f"{method}_clean_acc1")] + [m.get(f"{method}_{corruption}_s{s}_acc1")
                                                            for s in sev]
                    if None in ys:
                        continue
                    ax.plot([0] + sev, ys, ls, color=colour[run.label], lw=1.8, marker="o", ms=3,
                            label=f"{run.label} {'zero-shot' if method == 'zeroshot' else 'linear'}")
            ax.set_title(corruption.replace("_", " "))
            ax.set_xticks(range(0, 6))
            ax.set_xlabel("severity (0 = clean)")
            ax.set_ylim(0, 1.02)
        for ax in list(axes.flat)[len(corruptions):]:
            ax.axis("off")
        axes[0][0].set_ylabel("top-1 accuracy")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8.5,
                   bbox_to_anchor=(0.5, -0.02))
        fig.tight_layout(rect=(0, 0.08 if rows == 1 else 0.05, 1, 1))
        return _png(fig)


def prototype_usage(runs: Sequence[RunData]) -> bytes | None:
    """Histogram of prototype use: the share of samples whose argmax is each prototype,
    prototypes sorted from most to least used (log-log). Healthy use is a long, flat histogram
    near the dashed 1/K line; collapse is one bar at share 1."""
    have = [(r, d) for r in runs for k, d in r.details.items() if k.endswith("/prototype_collapse")]
    if not have:
        return None
    colour = palette(runs)
    shares = {}
    for run, d in have:
        for key in ("image_argmax_counts", "text_argmax_counts"):
            counts = np.sort(np.asarray(d.get(key, []), float))[::-1]
            if counts.sum() > 0:
                shares[run.label, key] = counts / counts.sum()
    if not shares:
        return None
    floor = min(min(v[v > 0].min() for v in shares.values()), 1 / max(len(v) for v in shares.values())) / 3
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.3), sharey=True)
        for ax, key, title in ((axes[0], "image_argmax_counts", "images"),
                               (axes[1], "text_argmax_counts", "captions")):
            k_max = 1
            for run, _ in have:
                share = shares.get((run.label, key))
                if share is None:
                    continue
                k_max = max(k_max, len(share))
                used = int((share > 0).sum())
                edges = np.arange(1, len(share) + 2)
                ax.stairs(np.maximum(share, floor), edges, baseline=floor, fill=True,
                          color=colour[run.label], alpha=0.3)
                ax.stairs(np.maximum(share, floor), edges, baseline=floor, color=colour[run.label],
                          lw=1.6, label=f"{run.label}: {used} of {len(share)} used")
            ax.axhline(1 / k_max, color="#9aa5b1", lw=1.2, ls="--", label=f"uniform (1/{k_max})")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(1, k_max + 1)
            ax.set_ylim(floor, 1.6)
            ax.set_xlabel("prototype, most used first")
            ax.set_title(f"prototype usage: {title}")
            ax.legend(fontsize=8.5, loc="upper right")
        axes[0].set_ylabel("share of samples (argmax)")
        fig.tight_layout()
        return _png(fig)
