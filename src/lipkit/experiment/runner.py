"""Run every cell of an experiment: train, evaluate, record; skip the cells already done.

Each cell lives in `DIR/cells/DATASET/SETTING/bBATCH/sSEED/`: `run/` is its training run and
`cell.json` its record (metrics, timings, the digest of its run config). A cell whose `cell.json`
matches its config is not rerun; one trained but not evaluated is only evaluated; one stopped
mid-training resumes from its newest checkpoint. A cell whose config changed is retrained.
"""
from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from lipkit.errors import LipkitError
from lipkit.files import write_json
from lipkit.runs.directory import CHECKPOINTS_DIR, MODEL_FILE, OBJECTIVE_FILE, list_checkpoints

from .grid import Cell, build_cells
from .metrics import METRICS, extract
from .spec import ExperimentSpec

CELL_FILE = "cell.json"
VALIDATION = "validation"
VALIDATION_FILE = "validation.json"  # the run's records on the validation split (selection candidates)
TRAINED_FILE = "trained.json"
GRID_FILE = "grid.json"  # wall time summed over invocations


@dataclass
class GridResult:
    records: list[dict] = field(default_factory=list)  # one cell.json each, in grid order
    ran: int = 0  # cells trained or evaluated in this call
    stopped_by: str | None = None  # a signal ended training early; rerun to continue
    seconds: float = 0.0


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def _prune(run_dir: Path) -> None:
    """Keep config, metrics log and evaluation results; drop weights and checkpoints."""
    shutil.rmtree(run_dir / CHECKPOINTS_DIR, ignore_errors=True)
    for name in (MODEL_FILE, OBJECTIVE_FILE):
        (run_dir / name).unlink(missing_ok=True)


def _headline(metrics: dict[str, float]) -> str:
    shown = [("zs", "zeroshot"), ("lin", "linear"), ("knn", "knn"), ("i→t", "retrieval_i2t")]
    return " ".join(f"{label} {metrics[k]:.3f}" for label, k in shown if k in metrics)


def run_cell(cell: Cell, out: Path, spec: ExperimentSpec, memo) -> tuple[dict, str | None]:
    """Train (or resume) and evaluate one cell; (its record, the signal that stopped it or None)."""
    from lipkit.eval.adapter import load_model_spec
    from lipkit.eval.runner import evaluate_model, write_outputs
    from lipkit.train import train

    cell_dir = cell.directory(out)
    run_dir = cell_dir / "run"
    digest = cell.digest
    record = {"cell": cell.key, "dataset": cell.dataset.name, "setting": cell.setting.name,
              "batch_size": cell.batch_size, "seed": cell.seed, "steps": cell.steps,
              "samples": cell.steps * cell.batch_size, "config_digest": digest}
    trained = _read(cell_dir / TRAINED_FILE)
    if trained is not None and not (run_dir / MODEL_FILE).is_file():
        trained = None  # its weights are gone (pruned before its record was written): retrain
    if trained is None or trained.get("config_digest") != digest:
        resume = "latest" if trained is None and list_checkpoints(run_dir) else None
        try:
            result = train(cell.config(), run_dir, overwrite=resume is None, resume=resume)
        except LipkitError as e:  # a diverged or broken cell is recorded; the grid goes on
            record.update(error=f"training failed: {e}", metrics={})
            return record, None
        if result.stopped_by is not None:
            return record, result.stopped_by
        trained = {"config_digest": digest, "train_seconds": result.seconds,
                   "final_loss": result.final_loss, "bad_steps": result.bad_steps}
        write_json(cell_dir / TRAINED_FILE, trained, indent=2)
    start = time.perf_counter()
    evaluation = evaluate_model(load_model_spec(str(run_dir)), spec.tasks, progress=False, memo=memo)
    write_outputs(evaluation, run_dir / "results.json")
    record.update(train_seconds=trained["train_seconds"], final_loss=trained["final_loss"],
                  bad_steps=trained["bad_steps"], metrics=extract(evaluation.records))
    if cell.setting.name in spec.validated:  # a selection's candidate: scored on the validation split too
        em = load_model_spec(str(run_dir), [f"eval.split={VALIDATION}"])
        validation = evaluate_model(em, validation_tasks(spec), progress=False, memo=memo)
        write_outputs(validation, run_dir / VALIDATION_FILE)
        record["validation"] = extract(validation.records)
    record["eval_seconds"] = time.perf_counter() - start
    return record, None


def validation_tasks(spec: ExperimentSpec) -> list[str]:
    """The `lipkit eval` tasks that give the validation metrics."""
    from lipkit.eval.registry import task_of_record

    return list(dict.fromkeys(task_of_record(METRICS[m].task) for m in spec.validation_metrics))


def needs_run(cell: Cell, spec: ExperimentSpec, done: dict | None) -> bool:
    """No record yet, a record of another config, or one without the validation scores it needs."""
    return (done is None or done.get("config_digest") != cell.digest
            or (cell.setting.name in spec.validated and "error" not in done and "validation" not in done))


def load_record(cell: Cell, out: Path) -> dict | None:
    """A finished cell's record, its metrics read again from the run's evaluation records when
    they are kept (so metrics added to lipkit.experiment.metrics need no retraining)."""
    record = _read(cell.directory(out) / CELL_FILE)
    records = _read(cell.directory(out) / "run" / "results.json")
    if record is not None and "error" not in record and isinstance(records, list):
        record["metrics"] = extract(records)
    validation = _read(cell.directory(out) / "run" / VALIDATION_FILE)
    if record is not None and "validation" in record and isinstance(validation, list):
        record["validation"] = extract(validation)
    return record


def run_grid(spec: ExperimentSpec, out: Path, cells: list[Cell] | None = None,
             log=functools.partial(print, flush=True)) -> GridResult:
    from lipkit.eval.tower_memo import TowerMemo

    out.mkdir(parents=True, exist_ok=True)
    cells = build_cells(spec) if cells is None else cells
    memo = TowerMemo()
    result = GridResult()
    start = time.perf_counter()
    grid = _grid_key(cells)
    before = _earlier_wall_time(out, grid)
    todo = [needs_run(cell, spec, _read(cell.directory(out) / CELL_FILE)) for cell in cells]
    remaining = sum(todo)
    log(f"experiment {spec.title or spec.source}: {len(cells)} cells ({len(spec.datasets)} datasets, "
        f"{len(spec.settings)} settings, {len(spec.seeds)} seeds), {len(cells) - remaining} already done, "
        f"{remaining} to run")
    for i, (cell, needed) in enumerate(zip(cells, todo), 1):
        if not needed:
            result.records.append(load_record(cell, out))
            continue
        t0 = time.perf_counter()
        record, stopped = run_cell(cell, out, spec, memo)
        if stopped is not None:
            result.stopped_by = stopped
            log(f"stopped by {stopped} in {cell.key}; its checkpoint is kept. Run the same command "
                "again to continue.")
            break
        record["wall_seconds"] = time.perf_counter() - t0  # loading, training, evaluation
        write_json(cell.directory(out) / CELL_FILE, record, indent=2)
        _add_wall_time(out, grid, before, time.perf_counter() - start)
        if spec.keep == "results":
            _prune(cell.directory(out) / "run")
        result.records.append(record)
        result.ran += 1
        elapsed = time.perf_counter() - start
        left = remaining - result.ran
        eta = f", about {_clock(elapsed / result.ran * left)} left" if left else ""
        outcome = record.get("error") or _headline(record["metrics"])
        log(f"[{i}/{len(cells)}] {cell.key}: {time.perf_counter() - t0:.0f}s  {outcome}  "
            f"(elapsed {_clock(elapsed)}{eta})")
    result.seconds = time.perf_counter() - start
    _add_wall_time(out, grid, before, result.seconds)
    return result


def _grid_key(cells: list[Cell]) -> str:
    """Names the grid the wall time belongs to: every cell with its config digest."""
    return hashlib.sha256(json.dumps(sorted((c.key, c.digest) for c in cells)).encode()).hexdigest()[:16]


def _earlier_wall_time(out: Path, grid: str) -> dict:
    """The wall time recorded in DIR by earlier invocations of this same grid. A record of another
    grid (its spec changed since, so its cells are being trained again) does not count. A record
    from before grids were named is taken as this grid's."""
    totals = _read(out / GRID_FILE) or {}
    return totals if totals.get("grid", grid) == grid else {}


def _add_wall_time(out: Path, grid: str, before: dict, seconds: float) -> None:
    """Record this invocation's wall time so far on top of the earlier ones'. Written after every
    cell, so an invocation that is killed (SIGKILL, a crash) still counts up to its last cell."""
    write_json(out / GRID_FILE, {"wall_seconds": before.get("wall_seconds", 0.0) + seconds,
                                 "invocations": before.get("invocations", 0) + 1, "grid": grid},
               indent=2)


def grid_wall_seconds(out: Path, cells: list[Cell]) -> tuple[float, int]:
    """Wall time of every `lipkit experiment` invocation of this grid on DIR so far, and how many
    there were ((0, 0) when none recorded)."""
    totals = _earlier_wall_time(out, _grid_key(cells))
    return totals.get("wall_seconds", 0.0), totals.get("invocations", 0)
