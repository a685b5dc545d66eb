"""Mean ± standard deviation over seeds of every metric, per (dataset, setting, batch size)."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from lipkit.eval.results import format_table

from .metrics import METRICS, TABLE_GROUPS
from .spec import ExperimentSpec


@dataclass
class Stat:
    mean: float
    std: float  # sample standard deviation (n - 1); 0 for one seed
    n: int
    values: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, values: list[float]) -> "Stat":
        n = len(values)
        mean = sum(values) / n
        var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        return cls(mean, math.sqrt(var), n, list(values))

    @property
    def se(self) -> float:
        """Standard error of the mean; infinite for one seed (no estimate of the spread, so no
        difference from it can count as a win or a loss)."""
        return self.std / math.sqrt(self.n) if self.n > 1 else math.inf

    def text(self) -> str:
        digits = 0 if abs(self.mean) >= 100 else 3
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass
class Group:
    dataset: str
    setting: str
    batch_size: int
    metrics: dict[str, Stat]
    seeds: int
    failed: int  # cells whose training failed (recorded with an error)
    train_seconds: float  # mean per cell
    chosen: str = ""  # a selection's group: the candidate setting the validation split chose


Key = tuple[str, str, int]


def summarise(records: list[dict]) -> dict[Key, Group]:
    cells: dict[Key, list[dict]] = defaultdict(list)
    for r in records:
        cells[(r["dataset"], r["setting"], r["batch_size"])].append(r)
    groups = {}
    for key, rs in cells.items():
        good = [r for r in rs if "error" not in r]
        names = [m for m in METRICS if good and all(m in r["metrics"] for r in good)]
        metrics = {m: Stat.of([r["metrics"][m] for r in good]) for m in names}
        seconds = [r["train_seconds"] for r in good]
        groups[key] = Group(*key, metrics=metrics, seeds=len(good), failed=len(rs) - len(good),
                            train_seconds=sum(seconds) / len(seconds) if seconds else 0.0)
    return groups


def to_json(groups: dict[Key, Group]) -> list[dict]:
    return [asdict(g) for g in groups.values()]


def dataset_table(spec: ExperimentSpec, groups: dict[Key, Group], dataset: str,
                  metrics: list[str] | None = None) -> str:
    """One row per (setting, batch size): mean ± std over seeds of each metric."""
    rows_of = [g for g in groups.values() if g.dataset == dataset]
    present = [m for m in (metrics or list(METRICS)) if any(m in g.metrics for g in rows_of)]
    # the settings shown first (no selection's candidates), the selections, then the candidates
    order = {name: i for i, name in enumerate(dict.fromkeys([*spec.shown(), *(s.name for s in spec.settings)]))}
    rows = []
    for g in sorted(rows_of, key=lambda g: (order[g.setting], g.batch_size)):
        title = spec.setting(g.setting).title + (f" (→ {spec.setting(g.chosen).title})" if g.chosen else "")
        row = {"setting": title, "batch": g.batch_size,
               "seeds": f"{g.seeds}" + (f" ({g.failed} failed)" if g.failed else ""),
               "train s": f"{g.train_seconds:.0f}"}
        row.update({METRICS[m].label: g.metrics[m].text() for m in present if m in g.metrics})
        rows.append(row)
    return format_table(rows, ["setting", "batch", "seeds", "train s"] + [METRICS[m].label for m in present])


def dataset_tables(spec: ExperimentSpec, groups: dict[Key, Group], dataset: str) -> list[str]:
    """The dataset's tables, one per group of metrics it has (Markdown lines)."""
    lines = []
    for title, metrics in TABLE_GROUPS:
        if any(m in g.metrics for g in groups.values() if g.dataset == dataset for m in metrics):
            lines += [f"{title.capitalize()}:", "", dataset_table(spec, groups, dataset, list(metrics)), ""]
    return lines
