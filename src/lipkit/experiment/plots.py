"""Figures of an experiment (PNG, matplotlib Agg): per-dataset bars, and the gap-vs-batch lines."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lipkit.report.plots import COLOURS, STYLE  # noqa: E402

from .claims import difference  # noqa: E402
from .metrics import METRICS  # noqa: E402
from .spec import ExperimentSpec  # noqa: E402
from .summary import Group, Key  # noqa: E402

BAR_METRICS = ("zeroshot", "linear", "knn", "retrieval_i2t", "ood_zeroshot", "caption_probe",
               "wordsim", "image_mi", "image_nmi")
CROWDED = 16  # settings in a panel beyond which a figure puts one panel per row


def dataset_bars(spec: ExperimentSpec, groups: dict[Key, Group], dataset: str, path: Path) -> Path | None:
    present = [m for m in BAR_METRICS if any(g.dataset == dataset and m in g.metrics for g in groups.values())]
    if not present:
        return None
    batches = spec.batch_sizes_of(spec.dataset(dataset))
    shown = [spec.setting(name) for name in spec.shown()
             if any(g.dataset == dataset and g.setting == name for g in groups.values())]
    cols = 1 if len(shown) > CROWDED else 2  # one panel a row, so that many settings keep their labels legible
    rows = math.ceil(len(present) / cols)
    with plt.rc_context(STYLE):
        height = (2.9 + 0.9 * (cols == 1)) * rows
        fig, axes = plt.subplots(rows, cols, figsize=(max(11, 0.32 * len(shown)), height), squeeze=False)
        width = 0.8 / len(batches)
        for ax, metric in zip(axes.flat, present):
            for j, batch in enumerate(batches):
                xs, means, stds = [], [], []
                for i, s in enumerate(shown):
                    g = groups.get((dataset, s.name, batch))
                    if g is not None and metric in g.metrics:
                        xs.append(i + (j - (len(batches) - 1) / 2) * width)
                        means.append(g.metrics[metric].mean)
                        stds.append(g.metrics[metric].std)
                ax.bar(xs, means, width, yerr=stds, capsize=2, color=COLOURS[j % len(COLOURS)],
                       label=f"batch {batch}", error_kw={"elinewidth": 0.8})
            ax.set_title(METRICS[metric].label)
            ax.set_xticks(range(len(shown)))
            ax.set_xticklabels([s.title for s in shown], rotation=35, ha="right", rotation_mode="anchor", fontsize=8)
        for ax in list(axes.flat)[len(present):]:
            ax.set_visible(False)
        axes.flat[0].legend(fontsize=8)
        fig.suptitle(f"{dataset}: mean ± std over {len(spec.seeds)} seeds", fontweight="bold")
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / height))  # room for the title above the first row
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return path


def gap_lines(spec: ExperimentSpec, groups: dict[Key, Group], claim, path: Path) -> Path | None:
    """d = a − b against batch size, one panel per (dataset, metric), one line per a-setting."""
    datasets = [d for d in claim.datasets or [d.name for d in spec.datasets]
                if len(spec.batch_sizes_of(spec.dataset(d))) > 1]
    batches = sorted({b for d in datasets for b in spec.batch_sizes_of(spec.dataset(d))})
    panels = [(d, m) for d in datasets for m in claim.metrics]
    if not panels:
        return None
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
        drawn = False
        for ax, (dataset, metric) in zip(axes.flat, panels):
            for k, (a, b) in enumerate((a, b) for a in claim.a for b in claim.b):
                pts = [(batch, difference(groups, dataset, batch, metric, a, b)) for batch in batches]
                pts = [(batch, d) for batch, d in pts if d]
                if not pts:
                    continue
                drawn = True
                ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts], yerr=[p[1][1] for p in pts],
                            marker="o", capsize=3, color=COLOURS[k % len(COLOURS)],
                            label=f"{spec.setting(a).title} − {spec.setting(b).title}")
            ax.axhline(0, color="#999", linewidth=0.8)
            ax.set_xscale("log", base=2)
            ax.set_xticks(batches)
            ax.set_xticklabels([str(b) for b in batches])
            ax.set_xlabel("batch size")
            ax.set_title(f"{dataset}\n{METRICS[metric].label}", fontsize=9)
        axes.flat[0].set_ylabel("difference of means (± se)")
        axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        if drawn:
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=100)
        plt.close(fig)
    return path if drawn else None
