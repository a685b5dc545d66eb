"""`lipkit eval SPEC`: load a model, run the requested tasks on each dataset, write
CLIP_benchmark records. Each task is its module's `evaluate(model, data, cache=context)`, the
context shared by the tasks on one dataset.

Datasets: `eval.datasets` (or the one `eval.dataset`), each a built-in name or a path, all
opened (indexed, labels checked) before any image is embedded. `eval.dataset_train` replaces
the probes' training images of every dataset, `eval.shift` adds a shifted set with the same
classes to the OOD task; both are embedded once, whichever datasets use them.

Outputs: `--out FILE` is a JSON list of records (and `FILE` with `.details.json` for the plots'
curves and histograms, with `.files/` for the pictures a task draws); `--out-dir DIR` holds one
JSON per (model, dataset, task), as CLIP_benchmark writes them, plus `details.json` and `files/`.
"""
from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lipkit.files import atomic_write, write_json
from lipkit.progress import progress_bar

from .adapter import EvalModel, load_model_spec
from .context import Context, note
from .datasets import open_dataset
from .splits import EvalData, Split, limit_of
from .errors import EvalError, TaskSkipped
from .registry import SHORT_LABELS, TASKS, headline, parse_tasks, task_of_record
from .results import RECORD_KEYS, details_path, files_path, format_table, result_record, write_results
from .tower_memo import TowerMemo



@dataclass
class EvalOutput:
    records: list[dict]
    details: dict[str, dict] = field(default_factory=dict)  # "dataset/task" -> curves etc.
    seconds: dict[tuple[str, str], float] = field(default_factory=dict)  # (dataset, CLI task) -> wall time
    sources: list[str] = field(default_factory=list)  # per record, the dataset it was run on
    files: dict[str, bytes] = field(default_factory=dict)  # pictures by relative path (the emergent task)


def _aligned(split: Split, names: list[str] | None, data: EvalData, what: str) -> Split:
    """`split` (of dataset `what`, classes `names`) with labels that index `data`'s classes."""
    if split.labels is None:
        raise EvalError(f"{what}: has no labels")
    if (names is None) != (data.class_names is None):
        raise EvalError(f"{what}: its classes cannot be matched with those of {data.name}, one "
                        "has class names and the other not")
    if names is None or names == data.class_names:
        return split
    position = {n: i for i, n in enumerate(data.class_names)}
    unknown = [n for n in names if n not in position]
    if unknown:
        raise EvalError(f"{what}: class {unknown[0]!r} is not a class of {data.name}")
    mapping = np.array([position[n] for n in names])
    return Split(split.images, mapping[split.labels], split.caption, split.captions, split.key)


def open_datasets(em: EvalModel) -> list[EvalData]:
    """The datasets `em.eval` names, with `dataset_train` and `shift` attached to each."""
    cfg, data_cfg = em.eval, (em.run.data if em.run is not None else None)
    if cfg.num_workers < 0:
        raise EvalError(f"eval.num_workers: must be >= 0 (0 decodes in this process), got {cfg.num_workers}")

    def opened(spec: str, divide: bool = True) -> EvalData:
        return open_dataset(spec, cfg, data_cfg, seed=em.seed, divide=divide)

    datasets = [opened(spec, divide=not cfg.dataset_train) for spec in cfg.datasets or [cfg.dataset]]
    names = [d.name for d in datasets]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice:
        raise EvalError(f"two datasets are named {twice!r}; name them with NAME=PATH")
    labelled = [d for d in datasets if d.has_labels]  # the probes and OOD need labels
    if cfg.dataset_train:
        source = opened(cfg.dataset_train, divide=False)
        split = "train" if source.train is not None else "test"
        train, what = (source.train, f"{source.name} train") if split == "train" else \
            (source.test, source.name)
        for d in labelled:
            d.train, d.probe_train = _aligned(train, source.class_names, d, cfg.dataset_train), what
            if d.skipped is not None:
                d.skipped["train"] = list((source.skipped or {}).get(split, []))
    if cfg.shift:
        source = opened(cfg.shift, divide=False)
        for d in labelled:
            d.shift, d.shift_name = _aligned(source.test, source.class_names, d, cfg.shift), source.name
            if d.skipped is not None:
                d.skipped["shift"] = list((source.skipped or {}).get("test", []))
    for d in datasets:
        if d.by_path:  # read whole unless a limit is set (the built-ins apply their limits themselves)
            d.test = _limited(d, "test", d.test, cfg.test_limit, "test_limit")
            if d.train is not None:
                d.train = _limited(d, "train", d.train, limit_of(cfg, "linear_train_limit", True),
                                   "linear_train_limit")
    return datasets


def _limited(d: EvalData, what: str, split: Split, n: int, setting: str) -> Split:
    """`n` images spread over `split` (all for 0), said in one line when that is fewer."""
    if 0 < n < len(split):
        note(f"{d.name}: {n} of its {len(split)} {what} images (eval.{setting}={n})")
    return split.spread(n)


def _provenance(d: EvalData, task: str) -> dict:
    """What a dataset opened by path reports in its records: which images were read (the
    probes' test images when they divide the test split)."""
    splits = TASKS[task].image_splits
    probes = "train" in splits
    out = {}
    if d.test_split is not None:
        out["test_split"] = d.probe_test_split if probes and d.probe_test_split else d.test_split
    if d.probe_train is not None and probes:
        out["probe_train"] = d.probe_train
    if d.skipped is not None:
        out["skipped"] = sum(len(d.skipped.get(s, [])) for s in splits)
    return out


def evaluate_model(em: EvalModel, tasks: Sequence[str], progress: bool = True,
                   memo: TowerMemo | None = None, strict: bool = False) -> EvalOutput:
    """Run `tasks` (CLI names) on `em` over the datasets its eval config names. A `memo`
    shared across calls reuses the outputs of locked towers (a grid of LiT runs). `strict`: a
    task that does not apply to a dataset raises its TaskSkipped instead of being skipped."""
    tasks = parse_tasks(tasks)
    if memo is not None:
        memo.install(em.model)
    datasets = open_datasets(em)
    store = {}  # embeddings of the image sets shared by datasets
    out, recorded = EvalOutput([]), set()
    for data in datasets:
        ctx = Context(em, data, progress=progress, store=store)
        ctx.prepare(tasks)
        for task in progress_bar(tasks, desc=f"eval {data.name}", disable=not progress):
            start = time.perf_counter()
            try:
                results = TASKS[task].evaluate(em, data, cache=ctx)
            except TaskSkipped as skipped:
                if strict:
                    raise
                note(f"{task} on {data.name}: skipped, {skipped.reason}")
                continue
            out.seconds[(data.name, task)] = time.perf_counter() - start
            for r in results:
                if (r.dataset, r.task) in recorded:  # a dataset-free result (word similarity): once per model
                    continue
                recorded.add((r.dataset, r.task))
                if r.dataset == data.name or r.dataset.startswith(data.name + "-"):
                    r.metrics.update(_provenance(data, task))
                out.records.append(result_record(r.dataset, em.name, em.pretrained, r.task, r.metrics))
                out.sources.append(data.name)
                if r.details:
                    out.details[f"{r.dataset}/{r.task}"] = r.details
                out.files.update(r.files)
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def _write_files(files: dict[str, bytes], folder: Path) -> list[Path]:
    """Each file under `folder` (atomically, so a reader never sees half a picture)."""
    written = []
    for name, content in files.items():
        path = folder / name
        atomic_write(path, lambda tmp, content=content: tmp.write_bytes(content))
        written.append(path)
    return written


def write_outputs(out: EvalOutput, out_file: Path | None = None, out_dir: Path | None = None
                  ) -> list[Path]:
    """Write the records (and details) where asked; returns the files written."""
    written = []
    if out_file is not None:
        written += _write_files(out.files, files_path(out_file))
        written.append(write_results(out.records, out_file))
        if out.details:
            write_json(details_path(out_file), out.details, indent=2)
            written.append(details_path(out_file))
    if out_dir is not None:
        written += _write_files(out.files, out_dir / "files")
        for r in out.records:
            path = out_dir / f"{_slug(r['model'])}__{_slug(r['dataset'])}__{_slug(r['task'])}.json"
            write_json(path, r, indent=2)
            written.append(path)
        if out.details:
            write_json(out_dir / "details.json", out.details, indent=2)
            written.append(out_dir / "details.json")
    return written


def _written_by_eval(path: Path, details: bool) -> bool:
    """Whether `path` holds what `lipkit eval --out` writes there: a JSON list of records, or
    (`details`) a JSON object of curves per record."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if details:
        return isinstance(data, dict) and all(isinstance(v, dict) for v in data.values())
    return isinstance(data, list) and all(isinstance(r, dict) and set(RECORD_KEYS) <= set(r) for r in data)


def check_outputs(out_file: Path | None) -> None:
    """Before any work: `out_file` and its details file are new files or ones `lipkit eval` wrote
    before; never a folder, never a run's own files or any other file."""
    from lipkit.runs.directory import CONFIG_FILE

    if out_file is None:
        return
    for path, details in ((out_file, False), (details_path(out_file), True)):
        if path.is_dir():
            raise EvalError(f"--out {out_file}: {path} is a folder; give a file such as "
                            f"{path / 'results.json'}, or --out-dir {path} for one file per record")
        if path.exists() and not _written_by_eval(path, details):
            what = (f"a file of the run directory {path.parent}" if (path.parent / CONFIG_FILE).is_file()
                    else "not a results file of lipkit eval")
            raise EvalError(f"--out {out_file}: would write over {path}, which is {what}; give another file name")


def evaluate_spec(spec: str, tasks: Sequence[str], overrides: Sequence[str] = (),
                  out_file: Path | None = None, out_dir: Path | None = None,
                  progress: bool = True, memo: TowerMemo | None = None,
                  datasets: Sequence[str] = (), dataset_train: str = "", shift: str = ""
                  ) -> EvalOutput:
    """Evaluate a model spec; `datasets`, `dataset_train` and `shift` (the CLI's --dataset,
    --dataset-train, --shift) replace the eval config's when given. `out_file` is checked before
    any work; nothing is written when no task applied to any dataset (an EvalError)."""
    check_outputs(out_file)
    em = load_model_spec(spec, overrides)
    changes = {k: v for k, v in (("datasets", list(datasets)), ("dataset_train", dataset_train),
                                 ("shift", shift)) if v}
    em.eval = dataclasses.replace(em.eval, **changes)
    out = evaluate_model(em, tasks, progress=progress, memo=memo)
    if not out.records:
        raise EvalError("no results: every task was skipped on every dataset (the reasons are above); "
                        "nothing written")
    write_outputs(out, out_file, out_dir)
    return out


def evaluate_run(run_dir: Path, tasks: list[str], out: Path | None = None) -> list[dict]:
    """Evaluate a run directory; the records (written to `out` when given)."""
    return evaluate_spec(str(run_dir), tasks, out_file=out).records


def _short(name: str) -> str:
    return SHORT_LABELS.get(name, name)


def _value(key: str, v) -> str:
    if isinstance(v, float) and (key.endswith("median_rank") or key == "best_C"):
        return f"{v:g}"  # a rank or a grid value, not a share
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def summary_table(out: EvalOutput) -> str:
    """One row per record: dataset, task, its headline metrics, and the task's wall time."""
    rows = []
    for r, source in zip(out.records, out.sources):
        keys = headline(r["task"]) or tuple(r["metrics"])[:4]
        shown = ", ".join(f"{_short(k)} {_value(k, r['metrics'][k])}" for k in keys if k in r["metrics"])
        seconds = out.seconds.get((source, task_of_record(r["task"])))
        rows.append({"dataset": r["dataset"], "task": r["task"], "metrics": shown,
                     "time": f"{seconds:.0f} s" if seconds is not None else ""})
    return format_table(rows, ["dataset", "task", "metrics", "time"])
