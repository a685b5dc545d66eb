"""The experiment file: which runs make up the grid, how they are evaluated, which claims to judge.

    title: ...
    description: ...         # Markdown for the results page: what was chosen and why
    seeds: [0, 1, 2]
    batch_sizes: [64, 256]
    tasks: [zeroshot, linear, knn, retrieval, ood, text, collapse]
    keep: results            # results: delete model weights once a cell is evaluated; models: keep
    datasets:                # each a base run config plus overrides
      - {name: fashion-mnist, config: fashion-tiny, samples: 45000, set: [model.vision.width=64]}
    settings:                # each a set of overrides applied on every dataset
      - {name: clip, label: CLIP, set: [objective.name=clip]}
    claims:
      - {id: ..., text: ..., kind: greater, a: [xclip], b: [clip], metrics: [zeroshot, linear]}

`samples` fixes the training pairs each run sees, so every batch size gets the same number of
epochs: steps = round(samples / batch size). Every cell's config is built when the file is loaded,
so a wrong key fails before anything trains.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lipkit.typed_config import ConfigError, from_mapping
from lipkit.yaml_loader import read_yaml

CLAIM_KINDS = ("greater", "not_less", "gap_grows_as_batch_shrinks")


@dataclass
class DatasetSpec:
    name: str = ""
    config: str = ""  # preset name or YAML path (relative paths: from the experiment file)
    samples: int = 0  # training pairs per run
    set: list[str] = field(default_factory=list)


@dataclass
class SettingSpec:
    name: str = ""
    label: str = ""  # shown in tables and plots (default: name)
    set: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return self.label or self.name


@dataclass
class ClaimSpec:
    id: str = ""
    text: str = ""
    kind: Literal["greater", "not_less", "gap_grows_as_batch_shrinks"] = "greater"
    a: list[str] = field(default_factory=list)  # settings claimed better (or with the larger gap)
    b: list[str] = field(default_factory=list)  # settings they are compared with
    metrics: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)  # default: every dataset
    note: str = ""  # printed under the verdict (e.g. what the paper itself reported)


@dataclass
class ExperimentSpec:
    title: str = ""
    description: str = ""  # Markdown shown under the title: what was chosen and why
    seeds: list[int] = field(default_factory=lambda: [0])
    batch_sizes: list[int] = field(default_factory=list)
    tasks: list[str] = field(default_factory=lambda: ["zeroshot", "linear"])
    keep: Literal["results", "models"] = "results"
    datasets: list[DatasetSpec] = field(default_factory=list)
    settings: list[SettingSpec] = field(default_factory=list)
    claims: list[ClaimSpec] = field(default_factory=list)
    source: str = ""  # the file it was read from (set by load_spec)

    def setting(self, name: str) -> SettingSpec:
        return next(s for s in self.settings if s.name == name)


def _unique(names: list[str], what: str) -> None:
    seen = set()
    for n in names:
        if not n:
            raise ConfigError(f"{what}: every entry needs a name")
        if n in seen:
            raise ConfigError(f"{what}: '{n}' appears twice")
        seen.add(n)


def validate(spec: ExperimentSpec) -> None:
    from lipkit.eval.runner import parse_tasks

    from .metrics import METRICS

    if not spec.datasets or not spec.settings:
        raise ConfigError("an experiment needs at least one entry under 'datasets' and under 'settings'")
    if not spec.seeds:
        raise ConfigError("seeds: give at least one seed")
    if not spec.batch_sizes or any(b < 1 for b in spec.batch_sizes):
        raise ConfigError(f"batch_sizes: give one or more positive batch sizes, got {spec.batch_sizes}")
    parse_tasks(spec.tasks)
    _unique([d.name for d in spec.datasets], "datasets")
    _unique([s.name for s in spec.settings], "settings")
    _unique([c.id for c in spec.claims], "claims")
    for d in spec.datasets:
        if not d.config:
            raise ConfigError(f"datasets.{d.name}.config: name a preset or a YAML file")
        if d.samples < 1:
            raise ConfigError(f"datasets.{d.name}.samples: training pairs per run, must be >= 1")
    settings, datasets = {s.name for s in spec.settings}, {d.name for d in spec.datasets}
    for c in spec.claims:
        where = f"claims.{c.id}"
        for key in ("a", "b"):
            names = getattr(c, key)
            if not names:
                raise ConfigError(f"{where}.{key}: list the settings compared")
            unknown = [n for n in names if n not in settings]
            if unknown:
                raise ConfigError(f"{where}.{key}: unknown setting(s) {unknown}; settings: {', '.join(sorted(settings))}")
        unknown = [m for m in c.metrics if m not in METRICS]
        if not c.metrics or unknown:
            raise ConfigError(f"{where}.metrics: unknown metric(s) {unknown or '(none given)'}; "
                              f"available: {', '.join(METRICS)}")
        unknown = [n for n in c.datasets if n not in datasets]
        if unknown:
            raise ConfigError(f"{where}.datasets: unknown dataset(s) {unknown}")
        if c.kind == "gap_grows_as_batch_shrinks" and len(set(spec.batch_sizes)) < 2:
            raise ConfigError(f"{where}: kind {c.kind} needs at least two batch sizes")


def load_spec(path: str | Path) -> ExperimentSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file '{path}' does not exist")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"experiment file '{path}': expected a mapping at the top level")
    if "source" in raw:
        raise ConfigError(f"experiment file '{path}': 'source' is set by lipkit, not by the file")
    spec = from_mapping(ExperimentSpec, raw)
    spec.source = str(path)
    for d in spec.datasets:  # a config path is relative to the experiment file
        candidate = path.parent / d.config
        if d.config.endswith((".yaml", ".yml")) and not Path(d.config).is_absolute() and candidate.is_file():
            d.config = str(candidate)
    validate(spec)
    from .grid import build_cells

    build_cells(spec)  # every cell's run config, so a bad override fails now
    return spec
