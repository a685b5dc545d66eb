"""`train.keep_best`: the weights of the best evaluation so far in `RUN/checkpoints/best/`.

The folder is a run directory (config.yaml, tokenizer.json, model.safetensors,
objective.safetensors, so `lipkit eval` and `lipkit.load` read it), plus `best.json` (the metric,
its mode and value, the step, every metric of that evaluation) and `manifest.json` (the files'
checksums). It holds no trainer.pt: it is a model to use, not a place to resume from, so neither
`--resume latest` nor `train.keep_checkpoints` (which see only `step-N` folders) ever touches it.
It is written whole into a hidden staging folder and renamed over the old one, so a reader, or a
run killed mid-write, only ever finds a complete best.

Only a strictly better value replaces it (a tie keeps the earlier step), and a run resumed in
place starts from the value in its `best.json`, so a resumed run never replaces a better best with
a worse one, even one written by steps the resume takes again.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lipkit.config import ConfigError
from lipkit.runs.directory import CHECKPOINTS_DIR, write_staged

BEST_DIR = "best"
BEST_FILE = "best.json"
log = logging.getLogger("lipkit.train")


def best_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / BEST_DIR


def better(value: float, than: float | None, mode: str) -> bool:
    """Whether `value` beats `than` (None: nothing yet) under `mode` (max or min); NaN never does."""
    if not isinstance(value, (int, float)) or math.isnan(value):
        return False
    if than is None:
        return True
    return value > than if mode == "max" else value < than


@dataclass
class Best:
    metric: str
    mode: str
    value: float
    step: int
    samples: int = 0
    metrics: dict = field(default_factory=dict)  # every metric of the evaluation that gave it


def read_best(run_dir: Path) -> Best | None:
    """The best recorded in RUN/checkpoints/best/best.json, None when there is none (or it cannot be read)."""
    path = best_dir(run_dir) / BEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Best(str(data["metric"]), str(data["mode"]), float(data["value"]), int(data["step"]),
                    int(data.get("samples", 0)), dict(data.get("metrics", {})))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("lipkit: warning: %s cannot be read (%s); the next evaluation replaces the best", path, e)
        return None


def write_best(run_dir: Path, best: Best, files: dict[str, Callable[[Path], None]]) -> Path:
    """RUN/checkpoints/best with `files` (name -> write(path)) and best.json, atomically."""
    final = best_dir(run_dir)
    record = json.dumps(asdict(best), indent=1) + "\n"
    files = {**files, BEST_FILE: lambda p: p.write_text(record, encoding="utf-8")}
    write_staged(final, files, "the best checkpoint", "the best before it is intact")
    return final


class BestKeeper:
    """Which evaluation is best by `metric` (`mode` max or min), and its folder kept up to date."""

    def __init__(self, metric: str, mode: str):
        self.metric, self.mode = metric, mode
        self.best: Best | None = None

    def resume(self, run_dir: Path) -> None:
        """Continue from the best a run resumed in place wrote before (kept unless beaten); one
        chosen by another metric or mode is replaced by the next evaluation, with a note."""
        found = read_best(run_dir)
        if found is None:
            return
        if (found.metric, found.mode) != (self.metric, self.mode):
            log.warning("lipkit: note: %s holds the best by %s (%s); train.keep_best is now %s (%s), so the next "
                        "evaluation replaces it", best_dir(run_dir), found.metric, found.mode, self.metric, self.mode)
            return
        self.best = found

    def offer(self, metrics: dict, step: int, samples: int) -> Best | None:
        """The new best when this evaluation's `metrics` beat the best so far, else None. A metric
        the evaluation does not give is a ConfigError naming those it gives."""
        if self.metric not in metrics:
            raise ConfigError(f"train.keep_best: {self.metric} is not a metric of the evaluation at step {step}; "
                              f"it gives {', '.join(sorted(metrics))}")
        value = metrics[self.metric]
        if not better(value, self.best.value if self.best is not None else None, self.mode):
            return None
        return Best(self.metric, self.mode, float(value), step, samples, dict(metrics))

    def accept(self, best: Best) -> None:
        self.best = best
