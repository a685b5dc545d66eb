"""The studies' figures: panels of mean +- std curves over seeds, and annotated heat maps.
matplotlib with the Agg backend (no display); every PNG is written atomically."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lipkit.files import atomic_write  # noqa: E402


@dataclass
class Series:
    label: str
    x: list[float]
    mean: list[float]
    std: list[float]


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    xscale: str = "linear"  # linear | log | log2
    hline: float | None = None  # a reference level (e.g. 0 for margins)
    xticks: list[float] = field(default_factory=list)


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def line_panels(path: Path, title: str, panels: list[Panel], columns: int = 2) -> None:
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.6 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for s in panel.series:
            mean, std = np.asarray(s.mean), np.asarray(s.std)
            ax.errorbar(s.x, mean, yerr=std, marker="o", ms=4, capsize=3, label=s.label)
        if panel.xscale == "log":
            ax.set_xscale("log")
        elif panel.xscale == "log2":
            ax.set_xscale("log", base=2)
        if panel.xticks:
            ax.set_xticks(panel.xticks)
            ax.set_xticklabels([f"{t:g}" for t in panel.xticks])
        if panel.hline is not None:
            ax.axhline(panel.hline, color="grey", lw=0.8, ls="--")
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    _save(fig, path)


@dataclass
class HeatMap:
    title: str
    values: list[list[float]]  # [rows][columns]
    row_labels: list[str]
    column_labels: list[str]
    row_name: str
    column_name: str
    diverging: bool = False  # centre the colour scale on 0 (gains)
    fmt: str = "{:.3f}"
    marks: list[list[bool]] | None = None  # cells to star (e.g. a gain positive on every seed)


def heat_maps(path: Path, title: str, maps: list[HeatMap]) -> None:
    fig, axes = plt.subplots(1, len(maps), figsize=(5.4 * len(maps), 4.2), squeeze=False)
    for ax, m in zip(axes.flat, maps):
        values = np.asarray(m.values, dtype=float)
        if m.diverging:
            bound = max(float(np.nanmax(np.abs(values))), 1e-12)
            image = ax.imshow(values, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
        else:
            image = ax.imshow(values, cmap="viridis", aspect="auto")
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                level = image.norm(values[i, j])  # 0..1 along the colour map
                dark = abs(level - 0.5) > 0.3 if m.diverging else level < 0.6
                star = "*" if m.marks is not None and m.marks[i][j] else ""
                ax.text(j, i, m.fmt.format(values[i, j]) + star, ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
        ax.set_xticks(range(len(m.column_labels)))
        ax.set_xticklabels(m.column_labels, fontsize=8)
        ax.set_yticks(range(len(m.row_labels)))
        ax.set_yticklabels(m.row_labels, fontsize=8)
        ax.set_xlabel(m.column_name)
        ax.set_ylabel(m.row_name)
        ax.set_title(m.title, fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.85)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    _save(fig, path)
