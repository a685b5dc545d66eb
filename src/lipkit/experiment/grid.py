"""The cells of an experiment: one training run per (dataset, setting, batch size, seed)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from lipkit.config import ConfigError, RunConfig, load_config
from lipkit.typed_config import digest_dict

from .spec import DatasetSpec, ExperimentSpec, SettingSpec, read_spec


@dataclass
class Cell:
    dataset: DatasetSpec
    setting: SettingSpec
    batch_size: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.dataset.name}/{self.setting.name}/b{self.batch_size}/s{self.seed}"

    @property
    def steps(self) -> int:
        return max(1, round(self.dataset.samples / self.batch_size))

    def overrides(self) -> list[str]:
        return [*self.dataset.set, *self.setting.set, f"train.batch_size={self.batch_size}",
                f"train.steps={self.steps}", f"train.seed={self.seed}", "train.progress=false"]

    def config(self) -> RunConfig:
        """A fresh run config (training may fill in fields, so each caller gets its own)."""
        return load_config(self.dataset.config, self.overrides())

    @cached_property
    def digest(self) -> str:
        """Digest of the cell's run config: a record made under another config is stale."""
        text = json.dumps(digest_dict(self.config()), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def directory(self, out: Path) -> Path:
        return out / "cells" / self.key


def build_cells(spec: ExperimentSpec) -> list[Cell]:
    """Every cell, dataset-major (a dataset's data and caches are warm for its whole block)."""
    cells = [Cell(d, s, b, seed) for d in spec.datasets for s in spec.settings_of(d)
             for b in spec.batch_sizes_of(d, s.name) for seed in spec.seeds]
    for cell in cells:
        try:
            cell.digest  # builds the config once, so a bad override fails here
        except ConfigError as e:
            raise ConfigError(f"experiment cell {cell.key}: {e}") from None
    return cells


def load_spec(path: str | Path) -> ExperimentSpec:
    """The experiment file, checked whole: read and validated (spec.read_spec), and every cell's
    run config built, so that a bad override fails before any run starts."""
    spec = read_spec(path)
    build_cells(spec)
    return spec
