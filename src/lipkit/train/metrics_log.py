"""metrics.jsonl: one JSON object per logged step, appended and flushed."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch


def to_number(v) -> float | int:
    if isinstance(v, torch.Tensor):
        v = v.detach().float().item()
    return v if isinstance(v, int) or math.isfinite(v) else str(v)


class MetricsLog:
    def __init__(self, path: Path | None):
        self.path = path
        self._fh = open(path, "a") if path is not None else None

    def write(self, record: dict) -> None:
        if self._fh is None:
            return
        self._fh.write(json.dumps({k: to_number(v) for k, v in record.items()}) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
