"""Knobs chosen on the validation split: for each selection, dataset and batch size, the candidate
setting with the best mean over seeds of its validation score (the average of the experiment's
`validation_metrics` on `eval.split=validation`) stands for the selection. Its test numbers are
then what tables and claims read; the test split never takes part in the choice."""
from __future__ import annotations

from dataclasses import dataclass, replace

from .spec import ExperimentSpec
from .summary import Group, Key, Stat


@dataclass
class Choice:
    selection: str
    dataset: str
    batch_size: int
    chosen: str | None  # None: not every candidate has a validation score for every seed
    scores: dict[str, Stat]  # candidate -> validation score over seeds


def validation_score(record: dict, metrics: list[str]) -> float | None:
    values = record.get("validation", {})
    if "error" in record or not all(m in values for m in metrics):
        return None
    return sum(values[m] for m in metrics) / len(metrics)


def choose(spec: ExperimentSpec, records: list[dict], groups: dict[Key, Group]
           ) -> tuple[dict[Key, Group], list[Choice]]:
    """`groups` plus one group per (dataset, selection, batch size): a copy of the chosen
    candidate's, named after the selection; and the choices with every candidate's score. Ties
    go to the candidate listed first. A choice is made only when every candidate has a score for
    every seed (equal tries, on the same seeds); else it is recorded unmade."""
    out, choices = dict(groups), []
    for sel in spec.selections:
        for dataset in spec.datasets:
            if not set(sel.candidates) <= {s.name for s in spec.settings_of(dataset)}:
                continue  # a data set that runs only some candidates has no choice to make
            for batch in spec.batch_sizes_of(dataset, sel.name):
                scores, complete = {}, True
                for candidate in sel.candidates:
                    values = [validation_score(r, spec.validation_metrics) for r in records
                              if (r["dataset"], r["setting"], r["batch_size"]) == (dataset.name, candidate, batch)]
                    values = [v for v in values if v is not None]
                    complete = complete and len(values) == len(spec.seeds)
                    if values:
                        scores[candidate] = Stat.of(values)
                if not scores:
                    continue
                if not complete:
                    choices.append(Choice(sel.name, dataset.name, batch, None, scores))
                    continue
                best = max(scores, key=lambda c: scores[c].mean)
                group = groups.get((dataset.name, best, batch))
                if group is not None:
                    out[(dataset.name, sel.name, batch)] = replace(group, setting=sel.name, chosen=best)
                choices.append(Choice(sel.name, dataset.name, batch, best, scores))
    return out, choices


def choices_table(spec: ExperimentSpec, choices: list[Choice]) -> list[str]:
    """Markdown: each selection's candidates with their validation scores, and the one chosen."""
    metrics = " and ".join(spec.validation_metrics)
    lines = [f"Validation score: the mean of {metrics} on the validation split, mean ± std over seeds.", "",
             "| selection | dataset | batch | candidates (validation score) | chosen |", "|---|---|---|---|---|"]
    for c in choices:
        listed = "; ".join(f"{spec.setting(n).title}: {s.text()}" for n, s in c.scores.items())
        chosen = (f"**{spec.setting(c.chosen).title}**" if c.chosen else
                  f"none: not every candidate has all {len(spec.seeds)} seeds")
        lines.append(f"| {spec.setting(c.selection).title} | {c.dataset} | {c.batch_size} | {listed} | {chosen} |")
    return lines
