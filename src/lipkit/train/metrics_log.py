"""metrics.jsonl (one JSON object per logged step, appended and flushed), TensorBoard when asked,
and the throughput window behind samples/s and the data-wait share."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from lipkit.config import ConfigError
from lipkit.files import atomic_write


def to_number(v) -> float | int | str:
    """A JSON value: tensors as numbers, non-finite numbers as strings ("nan"), strings as they are."""
    if isinstance(v, torch.Tensor):
        v = v.detach().float().item()
    return v if isinstance(v, (int, str)) or math.isfinite(v) else str(v)


class MetricsLog:
    def __init__(self, path: Path | None, tensorboard_dir: Path | None = None):
        self.path = path
        self._fh = open(path, "a") if path is not None else None
        self._tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError(
                    "train.tensorboard: the 'tensorboard' package is not installed (pip install tensorboard)"
                ) from None
            self._tb = SummaryWriter(str(tensorboard_dir))

    def write(self, record: dict) -> None:
        if self._fh is None:
            return
        record = {k: to_number(v) for k, v in record.items()}
        try:
            self._fh.write(json.dumps(record) + "\n")
            self._fh.flush()
        except OSError as e:  # a full disk: say which file
            raise OSError(e.errno, e.strerror, str(self.path)) from None
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, global_step=record["step"])
            self._tb.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records after `last_step` (logged by a run that died after its last checkpoint), so a
    resumed run continues the file without repeats. Rewritten atomically."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and _step_of(line) is not None and _step_of(line) <= last_step]
    atomic_write(path, lambda p: p.write_text("".join(line + "\n" for line in keep)))


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a line cut short by a kill


class Throughput:
    """Samples/s and the share of wall time spent waiting for data, over the steps since the last
    log; warns (once) when data wait exceeds `warn_share`, except in the first window (start-up)."""

    def __init__(self, warn_share: float, num_workers: int):
        self.warn_share, self.num_workers = warn_share, num_workers
        self.windows = 0
        self.warned = False
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()
        self.samples = 0
        self.data_wait = 0.0

    def add(self, samples: int, data_wait: float) -> None:
        self.samples += samples
        self.data_wait += data_wait

    def window(self) -> tuple[dict, str | None]:
        """This window's figures, a warning or None, and a fresh window."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        figures = {"samples_per_s": self.samples / elapsed, "data_wait_share": self.data_wait / elapsed}
        self.windows += 1
        warning = None
        share = figures["data_wait_share"]
        if self.windows > 1 and not self.warned and self.warn_share > 0 and share > self.warn_share:
            self.warned = True
            warning = (
                f"waiting for data took {share:.0%} of step time (more than train.data_wait_warn_share "
                f"{self.warn_share:.0%}): raise data.num_workers (now {self.num_workers}) so batches are "
                f"prepared in parallel, or make loading an item cheaper"
            )
        self.reset()
        return figures, warning
