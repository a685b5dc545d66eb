"""What a report shows about each run: its config, training log and evaluation results.

A source is a lipkit run directory (config.yaml, metrics.jsonl, results.json and
results.details.json as `lipkit eval --out RUN/results.json` writes them, and the pictures under
results.files/), a results JSON file (a list of records or one record; its `.details.json` and
`.files/` beside it), or a folder written by `lipkit eval --out-dir` (one record per file, plus
details.json and files/).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lipkit.errors import LipkitError
from lipkit.eval.results import DETAILS_SUFFIX, details_path, files_path
from lipkit.eval.wise_ft import CURVE_FILE, read_curve
from lipkit.typed_config import ConfigError
from lipkit.yaml_loader import read_yaml

RESULTS_FILE = "results.json"


class ReportError(LipkitError, ValueError):
    """A report source that cannot be read, stated in one line."""


@dataclass
class RunData:
    label: str
    path: Path
    config: dict = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)  # metrics.jsonl
    records: list[dict] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # "dataset/task" -> curves, histograms
    files: Path | None = None  # the folder of the pictures the details name (lipkit eval's .files/)
    curve: dict | None = None  # lipkit interpolate --alphas: the WiSE-FT curve (lipkit.eval.wise_ft)

    @property
    def objective(self) -> str:
        return str(self.config.get("objective", {}).get("name", "")) or "–"

    def metric(self, task: str, key: str, dataset_suffix: str = ""):
        """The first record of `task` (on a dataset ending in `dataset_suffix`) with a numeric
        `key`, or None."""
        for r in self.records:
            if r.get("task") == task and str(r.get("dataset", "")).endswith(dataset_suffix):
                value = r.get("metrics", {}).get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    return value
        return None

    def record(self, task: str) -> dict | None:
        return next((r for r in self.records if r.get("task") == task), None)

    def picture(self, name: str) -> bytes | None:
        """A picture the details name (a path relative to the files folder), or None if absent."""
        if self.files is None or not name:
            return None
        path = self.files / name
        if self.files.resolve() not in path.resolve().parents:
            return None  # a name leading out of the folder
        try:
            return path.read_bytes()
        except OSError:
            return None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: cannot read JSON ({e})") from None


def _records(data, path: Path) -> list[dict]:
    records = [data] if isinstance(data, dict) else data
    if not isinstance(records, list) or not all(isinstance(r, dict) and "task" in r and "metrics" in r
                                                for r in records):
        raise ReportError(f"{path}: not CLIP_benchmark records (need 'task' and 'metrics')")
    return records


def _details_of(results_file: Path) -> dict:
    path = details_path(results_file)
    return _read_json(path) if path.is_file() else {}


def read_log(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if n == len(path.read_text(encoding="utf-8").splitlines()):
                break  # a run still writing its last line
            raise ReportError(f"{path}:{n}: not a JSON line") from None
    return rows


def load_source(path: str | Path) -> RunData:
    path = Path(path)
    if path.is_file():
        records = _records(_read_json(path), path)
        label = str(records[0].get("model", path.stem)) if records else path.stem
        return RunData(label, path, records=records, details=_details_of(path), files=files_path(path))
    if not path.is_dir():
        raise ReportError(f"{path}: no such run directory or results file")
    run = RunData(path.name, path)
    is_run = (path / "config.yaml").is_file()
    if is_run:
        try:
            run.config = read_yaml(path / "config.yaml") or {}
        except ConfigError as e:
            raise ReportError(str(e)) from None
    if (path / "metrics.jsonl").is_file():
        run.log = read_log(path / "metrics.jsonl")
    if (path / CURVE_FILE).is_file():
        try:
            run.curve = read_curve(path / CURVE_FILE)
        except LipkitError as e:
            raise ReportError(str(e)) from None
    if (path / RESULTS_FILE).is_file():
        run.records = _records(_read_json(path / RESULTS_FILE), path / RESULTS_FILE)
        run.details = _details_of(path / RESULTS_FILE)
        run.files = files_path(path / RESULTS_FILE)
    elif not is_run:  # an --out-dir folder: one record per file (a run's own JSON files are not records)
        for f in sorted(path.glob("*.json")):
            if f.name == "details.json":
                run.details = _read_json(f)
                run.files = path / "files"
            elif not f.name.endswith(DETAILS_SUFFIX):
                run.records.extend(_records(_read_json(f), f))
    if not run.log and not run.records and not is_run:
        raise ReportError(f"{path}: nothing to report: not a run directory (no config.yaml) and no results "
                          f"files (lipkit eval --out / --out-dir) in it")
    if not run.log and not run.records and not run.curve:
        raise ReportError(f"{path}: nothing to report (no metrics.jsonl and no results; run "
                          f"'lipkit eval {path} --out {path / RESULTS_FILE}' first)")
    return run


def load_sources(paths) -> list[RunData]:
    runs = [load_source(p) for p in paths]
    if not runs:
        raise ReportError("no runs given")
    seen: dict[str, int] = {}
    for run in runs:  # two runs called "xclip" in different folders: label them apart
        seen[run.label] = seen.get(run.label, 0) + 1
        if seen[run.label] > 1:
            run.label = f"{run.label} ({seen[run.label]})"
    return runs
