"""Evaluation results in CLIP_benchmark's JSON schema, and a small table printer.

A task's `evaluate` returns `TaskResult`s; a record is {"dataset", "model", "pretrained", "task",
"metrics", "language"}. Task names follow CLIP_benchmark ("zeroshot_classification",
"linear_probe", "zeroshot_retrieval", ...; `registry` lists lipkit's).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lipkit.files import write_json

RECORD_KEYS = ("dataset", "model", "pretrained", "task", "metrics", "language")


@dataclass
class TaskResult:
    """One record's dataset, task and metrics, and details for the report (curves, histograms)
    that do not fit the schema's scalar metrics, and files (pictures) by relative path."""
    dataset: str
    task: str
    metrics: dict
    details: dict = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


def _plain(value):
    """numpy / torch scalars -> Python numbers, so records serialise as JSON."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise TypeError(f"metric value {value!r} of type {type(value).__name__} is not a scalar")


def result_record(dataset: str, model_name: str, pretrained: str, task: str,
                  metrics: Mapping[str, object], language: str = "en") -> dict:
    """One result in CLIP_benchmark's schema."""
    return {"dataset": dataset, "model": model_name, "pretrained": pretrained, "task": task,
            "metrics": {str(k): _plain(v) for k, v in metrics.items()}, "language": language}


def write_results(records: Sequence[Mapping], path: str | os.PathLike) -> Path:
    """Write `records` as a JSON list (indent 2), atomically: a reader sees the old file or the
    whole new one, never a partial write."""
    path = Path(path)
    write_json(path, [dict(r) for r in records], indent=2)
    return path


def read_results(path: str | os.PathLike) -> list[dict]:
    """Records written by `write_results` (a single record object is also accepted)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [data] if isinstance(data, dict) else data


def record_row(record: Mapping) -> dict:
    """A record flattened for `format_table`: its top-level fields plus its metrics."""
    row = {k: v for k, v in record.items() if k != "metrics"}
    row.update(record.get("metrics", {}))
    return row


def _cell(value, float_format: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isfinite(value):
        return float_format.format(value)
    return str(value)


def format_table(rows: Sequence[Mapping], columns: Sequence[str],
                 float_format: str = "{:.4f}") -> str:
    """A Markdown table (also readable as plain text) of `columns` for each row; missing cells
    are blank, floats use `float_format`, numbers are right-aligned."""
    cells = [[_cell(row.get(c), float_format) for c in columns] for row in rows]
    numeric = [bool(rows) and all(isinstance(row.get(c), (int, float)) or row.get(c) is None
                                  for row in rows) for c in columns]
    widths = [max([len(c), 3] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values):
        padded = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                          for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(columns), rule] + [line(r) for r in cells])


DETAILS_SUFFIX = ".details.json"


def details_path(results_file: Path) -> Path:
    """Where the curves and histograms of `results_file`'s records go: `results.json` ->
    `results.details.json`."""
    name = results_file.name[:-5] if results_file.name.endswith(".json") else results_file.name
    return results_file.with_name(name + DETAILS_SUFFIX)


FILES_SUFFIX = ".files"


def files_path(results_file: Path) -> Path:
    """The folder of the pictures `results_file`'s records name (`TaskResult.files`):
    `results.json` -> `results.files/`."""
    name = results_file.name[:-5] if results_file.name.endswith(".json") else results_file.name
    return results_file.with_name(name + FILES_SUFFIX)
