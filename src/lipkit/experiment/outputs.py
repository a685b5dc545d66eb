"""Everything an experiment writes once its cells are done: summary (JSON, Markdown), figures,
and the results page (`DIR/results.md`, and `--page FILE` with its figures beside it)."""
from __future__ import annotations

import math
from pathlib import Path

from lipkit.files import atomic_write, write_json

from .claims import judge_all
from .page import render
from .plots import dataset_bars, gap_lines
from .selection import choose
from .spec import ExperimentSpec
from .summary import dataset_tables, summarise, to_json


def _text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def _finite(row: dict) -> dict:
    """JSON has no NaN or infinity: a missing difference or a one-seed standard error is null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def write_results(spec: ExperimentSpec, records: list[dict], out: Path, command: str,
                  grid_time: tuple[float, int], page: Path | None = None, rewritten: bool = False) -> list[Path]:
    groups, choices = choose(spec, records, summarise(records))
    verdicts = judge_all(spec, groups)
    summary = out / "summary.json"
    write_json(summary, {
        "groups": to_json(groups),
        "choices": [{"selection": c.selection, "dataset": c.dataset, "batch_size": c.batch_size,
                     "chosen": c.chosen, "validation_scores": {k: s.__dict__ for k, s in c.scores.items()}}
                    for c in choices],
        "claims": [{"id": v.claim.id, "text": v.claim.text, "verdict": v.verdict,
                    "wins": v.count("win"), "ties": v.count("tie"), "losses": v.count("loss"),
                    "missing": v.count("missing"),
                    "conditions": [_finite(c.__dict__) | {"outcome": c.outcome} for c in v.conditions]}
                   for v in verdicts]}, indent=2)
    written = [summary]
    written.append(_text(out / "summary.md", "\n".join(
        line for d in spec.datasets for line in [f"## {d.name}", "", *dataset_tables(spec, groups, d.name)])))
    cell_seconds = sum(r.get("wall_seconds", r.get("train_seconds", 0) + r.get("eval_seconds", 0))
                       for r in records)
    for target in [out / "results.md"] + ([page] if page is not None else []):
        fig_dir = out / "plots" if target == out / "results.md" else target.with_suffix("")
        figures = {}
        for d in spec.datasets:
            path = dataset_bars(spec, groups, d.name, fig_dir / f"{d.name}.png")
            if path is not None:
                figures[d.name] = path
        for c in spec.claims:
            if c.kind == "gap_grows_as_batch_shrinks":
                path = gap_lines(spec, groups, c, fig_dir / f"{c.id}.png")
                if path is not None:
                    figures[f"claim:{c.id}"] = path
        written += list(figures.values())
        written.append(_text(target, render(spec, len(records), groups, verdicts, figures, target, command,
                                            grid_time, cell_seconds, choices, rewritten) + "\n"))
    return written
