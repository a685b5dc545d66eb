"""A labelled image set at a path (`layouts`) as an `EvalData`: class names, zero-shot
templates, label indices and splits.

- Class names, the first of: the dataset's `classnames.txt` (CLIP_benchmark's file: line i
  names class i), the `class_names` of `eval.prompts_path`, the labels themselves (the sorted
  distinct names: folder names, a table's label texts). Index labels with none of these have
  no names, and zero-shot is skipped.
- Templates, the first of: the dataset's `zeroshot_classification_templates.txt` (one a line,
  `{c}` or `{}` standing for the class name), the `templates` of `eval.prompts_path`,
  `GENERIC_TEMPLATES`. Both files are looked for in the dataset's folder (a table's folder).
- Labels: an index must name a class (0 <= i < number of classes), a name must be in the list.
- Splits (CLIP_benchmark's protocol): the dataset's test split is what zero-shot and retrieval
  score, whole; the probes train on its train split. A dataset with one split is all test split;
  its probes train on `--dataset-train`, or, only when `eval.probe_train_fraction` asks for it,
  on that share of each class of the test split (a fixed seed: every model sees the same
  division), and then score the rest of it. The tasks' `Context` divides the split once it is
  embedded, so its images are embedded once.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lipkit.config import EvalConfig

from .errors import EvalError
from .images import ImageFiles
from .layouts import RawDataset, RawSplit, read_layout
from .splits import DIVISION_SEED, EvalData, Split
from .templates import class_prompts, load_prompts

CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "zeroshot_classification_templates.txt"
GENERIC_TEMPLATES = ["a photo of a {c}.", "a photo of the {c}.", "a picture of a {c}.",
                     "an image of a {c}.", "a drawing of a {c}."]


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-empty lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EvalError(f"{path}: cannot read ({e})") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise EvalError(f"{path}: empty")
    return lines


def read_classnames(path: Path) -> list[str]:
    lines = _lines(path)
    seen = set()
    for n, name in lines:
        if name in seen:
            raise EvalError(f"{path}:{n}: class {name!r} is listed twice")
        seen.add(name)
    return [name for _, name in lines]


def read_templates(path: Path) -> list[str]:
    lines = _lines(path)
    for n, template in lines:
        if "{c}" not in template and "{}" not in template:
            raise EvalError(f"{path}:{n}: template {template!r} has no '{{c}}' or '{{}}' for the "
                            "class name")
    return [t for _, t in lines]


def _class_list(raw: RawDataset, prompts) -> tuple[list[str] | None, str]:
    """(class names, where they come from), or (None, "") to derive them from the labels."""
    path = raw.root / CLASSNAMES_FILE
    if path.is_file():
        return read_classnames(path), str(path)
    if prompts is not None:
        return prompts[0], prompts[2]
    return None, ""


def _derived_names(splits: list[RawSplit]) -> list[str] | None:
    """Sorted distinct class names of name labels; None for index labels; an error for both."""
    labels = [(label, where) for s in splits for label, where in zip(s.labels, s.label_where)]
    index = next(((label, w) for label, w in labels if isinstance(label, int)), None)
    name = next(((label, w) for label, w in labels if isinstance(label, str)), None)
    if index and name:
        raise EvalError(f"{index[1]}: label {index[0]} is an index, but {name[1]} names a class "
                        f"({name[0]!r}); with no class list (classnames.txt) labels are all "
                        "indices or all names")
    return sorted({label for label, _ in labels}) if name else None


def _indices(split: RawSplit, names: list[str] | None, source: str) -> np.ndarray:
    position = {n: i for i, n in enumerate(names or [])}
    out = np.empty(len(split.labels), dtype=np.int64)
    for i, (label, where) in enumerate(zip(split.labels, split.label_where)):
        index = position.get(label, -1) if isinstance(label, str) else label
        if index < 0 or (names is not None and index >= len(names)):
            listed = f"{source}: {len(names)} classes" if names is not None else "indices >= 0"
            raise EvalError(f"{where}: label {label!r} is not in the class list ({listed})")
        out[i] = index
    return out


def _templates(raw: RawDataset, prompts, names: list[str] | None):
    path = raw.root / TEMPLATES_FILE
    if path.is_file():
        return read_templates(path)
    if prompts is None:
        return list(GENERIC_TEMPLATES)
    if isinstance(prompts[1], dict) and names is not None:
        try:
            class_prompts(names, prompts[1])
        except ValueError as e:
            raise EvalError(f"{prompts[2]}: 'templates': {e}") from None
    return prompts[1]


def _split(raw: RawSplit, labels: np.ndarray | None, key: str) -> Split:
    captioned = any(raw.captions)
    return Split(ImageFiles(raw.refs), labels,
                 [c[0] if c else "" for c in raw.captions] if captioned else None,
                 [list(c) for c in raw.captions] if captioned else None, key)


def open_user_dataset(spec: str, cfg: EvalConfig, divide: bool = True) -> EvalData:
    raw = read_layout(spec, cfg)
    prompts = None
    if cfg.prompts_path:
        prompts = (*load_prompts(cfg.prompts_path), cfg.prompts_path)
    for name, split in raw.splits.items():
        if not split.refs:
            first = split.skipped[:1]
            raise EvalError(f"{spec}: empty {name} split (no usable samples"
                            + (f"; e.g. {first[0][0]}: {first[0][1]})" if first else ")"))
    splits = list(raw.splits.values())
    labelled = bool(splits[0].labels)
    if any(bool(s.labels) != labelled for s in splits):
        raise EvalError(f"{spec}: the train split has labels and the test split has none, or the "
                        "other way round")
    names, source = _class_list(raw, prompts)
    if labelled and names is None:
        names, source = _derived_names(splits), "the labels"
    labels = {k: _indices(s, names, source) if labelled else None for k, s in raw.splits.items()}
    templates = _templates(raw, prompts, names)
    key = str(Path(spec).resolve()) if Path(spec).exists() else spec
    given = {k: _split(s, labels[k], f"{key}::{k}") for k, s in raw.splits.items()}

    def dataset(train: Split | None, test: Split, test_split: str, probe_train: str | None,
                skipped: dict) -> EvalData:
        return EvalData(raw.name, train, test, names, templates, test_split=test_split,
                        probe_train=probe_train, skipped=skipped)

    if len(given) == 2:
        return dataset(given["train"], given["test"], "test", "train",
                       {k: list(s.skipped) for k, s in raw.splits.items()})
    (whole,) = given.values()
    data = dataset(None, whole, "all images", None, {"test": list(splits[0].skipped)})
    fraction = cfg.probe_train_fraction
    if not 0 <= fraction < 1:
        raise EvalError(f"eval.probe_train_fraction: must lie in [0, 1) (0: no division), got {fraction}")
    if labelled and divide and fraction:
        how = f"stratified by class, seed {DIVISION_SEED}"
        data.probe_division = fraction
        data.probe_train = f"{fraction:.0%} of the images ({how})"
        data.probe_test_split = f"the other {1 - fraction:.0%} of the images ({how})"
    return data
