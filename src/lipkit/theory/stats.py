"""Statistics over seeds: mean +- std of every metric, and gains paired by seed (a seed fixes the
data model, the initialisation and the batches, so two objectives on one seed differ only by the
objective)."""
from __future__ import annotations

import math

Metrics = dict[str, float]


def mean_std(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std}


def summarise(runs: list[Metrics]) -> dict[str, dict[str, float]]:
    return {key: mean_std([r[key] for r in runs]) for key in runs[0]}


def paired_gain(base: list[Metrics], other: list[Metrics], metric: str) -> dict[str, float]:
    """other - base, seed by seed: mean, std, and on how many seeds it is positive."""
    diffs = [o[metric] - b[metric] for b, o in zip(base, other)]
    return {**mean_std(diffs), "positive_seeds": sum(d > 0 for d in diffs), "seeds": len(diffs)}
