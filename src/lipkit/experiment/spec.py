"""The experiment file: which runs make up the grid, how they are evaluated, which claims to judge.

    title: ...
    description: ...         # Markdown for the results page: what was chosen and why
    seeds: [0, 1, 2]
    batch_sizes: [64, 256]
    tasks: [zeroshot, linear, knn, retrieval, ood, text, collapse]
    keep: results            # results: delete model weights once a cell is evaluated; models: keep
    datasets:                # each a base run config plus overrides
      - {name: fashion-mnist, config: fashion-tiny, samples: 45000, set: [model.vision.width=64]}
      - {name: noisy, ..., settings: [clip, xclip], batch_sizes: [256]}   # a subset of the grid
    settings:                # each a set of overrides applied on every dataset
      - {name: clip, label: CLIP, set: [objective.name=clip]}
    selections:              # a knob tuned on the validation split: the candidate chosen there
      - {name: clip-tuned, label: "CLIP, τ tuned", candidates: [clip, clip-t0.02]}
    validation_metrics: [zeroshot, linear]
    recipes: [basic, strong]  # optional: every setting, selection and claim once per training recipe
    claims:
      - {id: ..., text: ..., kind: greater, a: [xclip], b: [clip], metrics: [zeroshot, linear]}

`samples` fixes the training pairs each run sees, so every batch size gets the same number of
epochs: steps = round(samples / batch size). Every cell's config is built when the file is loaded
(`grid.load_spec`), so a wrong key fails before anything trains.

A selection is a knob chosen fairly: every candidate cell is also evaluated on its dataset's
validation split (`eval.split=validation`: training data the runs held back, never the test
split), and for each (dataset, batch size) the candidate with the best mean over seeds of the
`validation_metrics` (their average) stands for the selection; its test numbers are what tables
and claims read. Give the methods compared the same number of candidates.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lipkit.typed_config import ConfigError, from_mapping
from lipkit.yaml_loader import read_yaml

from .recipes import expand_recipes, recipe_of

CLAIM_KINDS = ("greater", "not_less", "gap_grows_as_batch_shrinks")


@dataclass
class RecipeBatchSizes:
    recipe: str = ""
    batch_sizes: list[int] = field(default_factory=list)


@dataclass
class DatasetSpec:
    name: str = ""
    config: str = ""  # preset name or YAML path (relative paths: from the experiment file)
    samples: int = 0  # training pairs per run
    set: list[str] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)  # run only these settings here (default: all)
    batch_sizes: list[int] = field(default_factory=list)  # default: the experiment's
    recipes: list[str] = field(default_factory=list)  # train only under these recipes (default: all)
    # a further recipe that trains here at fewer batch sizes (to fit a time budget)
    recipe_batch_sizes: list[RecipeBatchSizes] = field(default_factory=list)


@dataclass
class SettingSpec:
    name: str = ""
    label: str = ""  # shown in tables and plots (default: name)
    set: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return self.label or self.name


@dataclass
class SelectionSpec:
    name: str = ""
    label: str = ""
    candidates: list[str] = field(default_factory=list)  # settings; the validation split picks one

    @property
    def title(self) -> str:
        return self.label or self.name


@dataclass
class ClaimSpec:
    id: str = ""
    text: str = ""
    kind: Literal["greater", "not_less", "gap_grows_as_batch_shrinks"] = "greater"
    a: list[str] = field(default_factory=list)  # settings or selections claimed better (or with the larger gap)
    b: list[str] = field(default_factory=list)  # settings or selections they are compared with
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
    selections: list[SelectionSpec] = field(default_factory=list)
    validation_metrics: list[str] = field(default_factory=lambda: ["zeroshot", "linear"])
    claims: list[ClaimSpec] = field(default_factory=list)
    # training recipes (presets/recipes): every setting, selection and claim once per recipe
    # (lipkit.experiment.recipes); empty: the runs' own configs only
    recipes: list[str] = field(default_factory=list)
    source: str = ""  # the file it was read from (set by read_spec)

    def setting(self, name: str) -> SettingSpec | SelectionSpec:
        """A setting or a selection, by name (both have a `title`)."""
        return next(s for s in [*self.settings, *self.selections] if s.name == name)

    def dataset(self, name: str) -> DatasetSpec:
        return next(d for d in self.datasets if d.name == name)

    def settings_of(self, dataset: DatasetSpec) -> list[SettingSpec]:
        return [s for s in self.settings if not dataset.settings or s.name in dataset.settings]

    def batch_sizes_of(self, dataset: DatasetSpec, setting: str | None = None) -> list[int]:
        """The dataset's batch sizes; with `setting`, those that setting trains at (a further
        recipe's twin `S@R` may train at fewer: the dataset's `recipe_batch_sizes`)."""
        sizes = dataset.batch_sizes or self.batch_sizes
        recipe = recipe_of(setting) if setting else None
        for rb in dataset.recipe_batch_sizes:
            if rb.recipe == recipe:
                sizes = rb.batch_sizes
        return sorted(set(sizes))

    @property
    def validated(self) -> set[str]:
        """Settings evaluated on the validation split too: the candidates of a selection."""
        return {c for sel in self.selections for c in sel.candidates}

    def shown(self) -> list[str]:
        """What tables lead with and figures show: the settings that are no selection's candidate
        or that a claim compares as they are, then the selections."""
        claimed = {n for c in self.claims for n in (*c.a, *c.b)}
        return ([s.name for s in self.settings if s.name not in self.validated or s.name in claimed]
                + [s.name for s in self.selections])


def _unique(names: list[str], what: str) -> None:
    seen = set()
    for n in names:
        if not n:
            raise ConfigError(f"{what}: every entry needs a name")
        if n in seen:
            raise ConfigError(f"{what}: '{n}' appears twice")
        seen.add(n)


def validate(spec: ExperimentSpec) -> None:
    from lipkit.eval.registry import parse_tasks

    from .metrics import METRICS

    if not spec.datasets or not spec.settings:
        raise ConfigError("an experiment needs at least one entry under 'datasets' and under 'settings'")
    if not spec.seeds:
        raise ConfigError("seeds: give at least one seed")
    if not spec.batch_sizes or any(b < 1 for b in spec.batch_sizes):
        raise ConfigError(f"batch_sizes: give one or more positive batch sizes, got {spec.batch_sizes}")
    parse_tasks(spec.tasks)
    _unique([d.name for d in spec.datasets], "datasets")
    _unique([s.name for s in spec.settings] + [s.name for s in spec.selections], "settings and selections")
    _unique([c.id for c in spec.claims], "claims")
    settings, datasets = {s.name for s in spec.settings}, {d.name for d in spec.datasets}
    for d in spec.datasets:
        if not d.config:
            raise ConfigError(f"datasets.{d.name}.config: name a preset or a YAML file")
        if d.samples < 1:
            raise ConfigError(f"datasets.{d.name}.samples: training pairs per run, must be >= 1")
        unknown = [n for n in d.settings if n not in settings]
        if unknown:
            raise ConfigError(f"datasets.{d.name}.settings: unknown setting(s) {unknown}")
        if any(b < 1 for b in d.batch_sizes):
            raise ConfigError(f"datasets.{d.name}.batch_sizes: must be positive, got {d.batch_sizes}")
    for sel in spec.selections:
        unknown = [n for n in sel.candidates if n not in settings]
        if len(sel.candidates) < 2 or unknown:
            raise ConfigError(f"selections.{sel.name}.candidates: list two or more settings"
                              + (f"; unknown: {unknown}" if unknown else ""))
    unknown = [m for m in spec.validation_metrics if m not in METRICS]
    if spec.selections and (not spec.validation_metrics or unknown):
        raise ConfigError(f"validation_metrics: unknown metric(s) {unknown or '(none given)'}; "
                          f"available: {', '.join(METRICS)}")
    compared = settings | {s.name for s in spec.selections}
    for c in spec.claims:
        where = f"claims.{c.id}"
        for key in ("a", "b"):
            names = getattr(c, key)
            if not names:
                raise ConfigError(f"{where}.{key}: list the settings compared")
            unknown = [n for n in names if n not in compared]
            if unknown:
                raise ConfigError(f"{where}.{key}: unknown setting(s) {unknown}; settings and selections: "
                                  f"{', '.join(sorted(compared))}")
        candidates = {sel.name: len(sel.candidates) for sel in spec.selections}
        tries = {n: candidates.get(n, 1) for n in (*c.a, *c.b)}
        if len(set(tries.values())) > 1:
            listed = ", ".join(f"{n}: {k}" for n, k in tries.items())
            raise ConfigError(f"{where}: the sides have unequal tries ({listed}); compare a selection with a "
                              "selection of as many candidates, a setting with a setting")
        unknown = [m for m in c.metrics if m not in METRICS]
        if not c.metrics or unknown:
            raise ConfigError(f"{where}.metrics: unknown metric(s) {unknown or '(none given)'}; "
                              f"available: {', '.join(METRICS)}")
        unknown = [n for n in c.datasets if n not in datasets]
        if unknown:
            raise ConfigError(f"{where}.datasets: unknown dataset(s) {unknown}")
        claim_datasets = [d for d in spec.datasets if not c.datasets or d.name in c.datasets]
        if c.kind == "gap_grows_as_batch_shrinks" and all(len(spec.batch_sizes_of(d)) < 2 for d in claim_datasets):
            raise ConfigError(f"{where}: kind {c.kind} needs at least two batch sizes")


def read_spec(path: str | Path) -> ExperimentSpec:
    """The experiment file, parsed and checked as a file (lipkit.experiment.grid.load_spec also
    builds every cell's run config)."""
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
    expand_recipes(spec)
    validate(spec)
    return spec
