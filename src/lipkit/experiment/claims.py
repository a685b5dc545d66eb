"""Verdicts on claims, from the per-seed numbers of the grid.

A claim compares settings `a` with settings `b` on some metrics. A *condition* is one (dataset,
batch size, metric, a-setting, b-setting). In each, the difference of seed means d = ā − b̄ counts
as a win when d > 2·se and a loss when d < −2·se (se = √(s_a²/n_a + s_b²/n_b), sample standard
deviations over seeds; infinite with one seed); otherwise it is a tie: the seeds cannot tell the two
apart. A condition a side has no numbers for (its cells failed or are missing) is *missing*: it
counts among the conditions, never as a win.

- greater ("a beats b"): supported when a wins more than half of the conditions and loses none;
  not supported when it loses at least as many as it wins (and at least one); else inconclusive.
- not_less ("a is as good or better"): supported when a loses none (and none is missing); not
  supported when it loses more than half; else inconclusive.
- gap_grows_as_batch_shrinks: the condition is (dataset, metric, pair) and the quantity is
  g = d(smallest batch) − d(largest batch), with se = √(se_small² + se_large²); judged as greater.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .metrics import METRICS
from .spec import ClaimSpec, ExperimentSpec
from .summary import Group, Key

Z = 2.0  # a difference counts when it exceeds Z standard errors
MISSING = (math.nan, math.nan)  # (difference, se) of a condition a side has no numbers for


@dataclass
class Condition:
    dataset: str
    batch: str  # "64", or "64 vs 256" for a gap
    metric: str
    a: str
    b: str
    diff: float
    se: float

    @property
    def outcome(self) -> str:
        if math.isnan(self.diff):  # a side has no numbers for it (failed or missing cells)
            return "missing"
        if self.diff > Z * self.se:
            return "win"
        if self.diff < -Z * self.se:
            return "loss"
        return "tie"


@dataclass
class Verdict:
    claim: ClaimSpec
    verdict: str  # supported | not supported | inconclusive | no data
    conditions: list[Condition] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(c.outcome == outcome for c in self.conditions)


def difference(groups: dict[Key, Group], dataset: str, batch: int, metric: str, a: str, b: str):
    ga, gb = groups.get((dataset, a, batch)), groups.get((dataset, b, batch))
    if ga is None or gb is None or metric not in ga.metrics or metric not in gb.metrics:
        return None
    sa, sb = ga.metrics[metric], gb.metrics[metric]
    return sa.mean - sb.mean, math.sqrt(sa.se ** 2 + sb.se ** 2)


def conditions(claim: ClaimSpec, spec: ExperimentSpec, groups: dict[Key, Group]) -> list[Condition]:
    datasets = claim.datasets or [d.name for d in spec.datasets]
    out = []
    for dataset in datasets:
        batches = sorted(set.intersection(*(set(spec.batch_sizes_of(spec.dataset(dataset), n))
                                            for n in (*claim.a, *claim.b))))
        for metric in claim.metrics:
            for a in claim.a:
                for b in claim.b:
                    if claim.kind == "gap_grows_as_batch_shrinks":
                        if len(batches) < 2:
                            continue
                        small = difference(groups, dataset, batches[0], metric, a, b) or MISSING
                        large = difference(groups, dataset, batches[-1], metric, a, b) or MISSING
                        out.append(Condition(dataset, f"{batches[0]} vs {batches[-1]}", metric, a, b,
                                             small[0] - large[0], math.hypot(small[1], large[1])))
                        continue
                    for batch in batches:
                        d = difference(groups, dataset, batch, metric, a, b) or MISSING
                        out.append(Condition(dataset, str(batch), metric, a, b, *d))
    return out


def judge(claim: ClaimSpec, spec: ExperimentSpec, groups: dict[Key, Group]) -> Verdict:
    conds = conditions(claim, spec, groups)
    v = Verdict(claim, "no data", conds)
    if v.count("missing") == len(conds):
        return v
    n, wins, losses = len(conds), v.count("win"), v.count("loss")
    if claim.kind == "not_less":
        v.verdict = ("supported" if losses == 0 and not v.count("missing") else
                     "not supported" if losses > n / 2 else "inconclusive")
    else:
        v.verdict = ("supported" if losses == 0 and wins > n / 2 else
                     "not supported" if losses > 0 and losses >= wins else "inconclusive")
    return v


def judge_all(spec: ExperimentSpec, groups: dict[Key, Group]) -> list[Verdict]:
    return [judge(c, spec, groups) for c in spec.claims]


def metric_label(name: str) -> str:
    return METRICS[name].label
