"""`lipkit eval SPEC`: load a model, run the requested tasks, write CLIP_benchmark records.

Outputs: `--out FILE` is a JSON list of records (and `FILE` with `.details.json` for the plots'
curves and histograms); `--out-dir DIR` holds one JSON per (model, dataset, task), as
CLIP_benchmark writes them, plus `details.json`.
"""
from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from lipkit.checkpoint import atomic_write

from .errors import EvalError
from .models import EvalModel, load_model_spec
from .results import format_table, record_row, result_record, write_results
from .sources import load_eval_data
from .tasks import TASKS, Context, TaskResult
from .tower_memo import TowerMemo

TASK_ORDER = tuple(TASKS)  # zeroshot, linear, ood, retrieval, knn, text, collapse
DETAILS_SUFFIX = ".details.json"

# The few metrics of each record worth a glance in the printed table.
HEADLINE = {
    "zeroshot_classification": ("acc1", "acc5", "mean_per_class_recall"),
    "linear_probe": ("acc1", "acc5", "mean_per_class_recall", "best_C"),
    "knn_classification": ("acc1", "acc5", "mean_per_class_recall"),
    "zeroshot_retrieval": ("text_retrieval_recall@1", "text_retrieval_recall@5",
                           "image_retrieval_recall@1", "image_retrieval_recall@5",
                           "text_retrieval_median_rank", "image_retrieval_median_rank"),
    "ood_classification": ("zeroshot_clean_acc1", "zeroshot_shifted_acc1", "zeroshot_drop",
                           "linear_clean_acc1", "linear_shifted_acc1", "linear_drop"),
    "word_similarity": ("wordsim_spearman",),
    "caption_probe": ("caption_probe_acc1",),
    "prototype_collapse": ("image_mutual_information_ratio", "text_mutual_information_ratio",
                           "image_label_nmi", "text_label_nmi", "argmax_agreement",
                           "image_distinct_prototypes"),
}
LABELS = {
    "mean_per_class_recall": "mpcr", "text_retrieval_recall@1": "i→t R@1",
    "text_retrieval_recall@5": "i→t R@5", "image_retrieval_recall@1": "t→i R@1",
    "image_retrieval_recall@5": "t→i R@5", "text_retrieval_median_rank": "i→t medR",
    "image_retrieval_median_rank": "t→i medR", "zeroshot_clean_acc1": "zs clean",
    "zeroshot_shifted_acc1": "zs shifted", "zeroshot_drop": "zs drop",
    "linear_clean_acc1": "lin clean", "linear_shifted_acc1": "lin shifted", "linear_drop": "lin drop",
    "wordsim_spearman": "Spearman ρ", "caption_probe_acc1": "acc1",
    "image_usage_entropy_ratio": "img usage H/logK", "text_usage_entropy_ratio": "txt usage H/logK",
    "image_sample_entropy_ratio": "img per-sample H/logK", "argmax_agreement": "img/txt agree",
    "image_distinct_prototypes": "prototypes used", "image_mutual_information_ratio": "img MI ratio",
    "text_mutual_information_ratio": "txt MI ratio", "image_label_nmi": "img NMI", "text_label_nmi": "txt NMI",
}


@dataclass
class EvalOutput:
    records: list[dict]
    details: dict[str, dict] = field(default_factory=dict)  # "dataset/task" -> curves etc.
    seconds: dict[str, float] = field(default_factory=dict)  # CLI task -> wall time


def parse_tasks(text: str | Sequence[str]) -> list[str]:
    tasks = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise EvalError(f"--tasks: unknown task(s) {', '.join(unknown) or '(none given)'}; "
                        f"available: {', '.join(TASK_ORDER)}")
    return list(dict.fromkeys(tasks))


def evaluate_model(em: EvalModel, tasks: Sequence[str], progress: bool = True,
                   memo: TowerMemo | None = None) -> EvalOutput:
    """Run `tasks` (CLI names) on `em` over the data its eval config names. A `memo` shared
    across calls reuses the outputs of locked towers (a grid of LiT runs)."""
    tasks = parse_tasks(tasks)
    if memo is not None:
        memo.install(em.model)
    data_cfg = em.run.data if em.run is not None else None
    data = load_eval_data(em.eval, data_cfg, seed=em.seed)
    ctx = Context(em, data, progress=progress)
    out = EvalOutput([])
    for task in tqdm(tasks, desc="eval", disable=not progress):
        start = time.perf_counter()
        results: list[TaskResult] = TASKS[task](ctx)
        out.seconds[task] = time.perf_counter() - start
        for r in results:
            record = result_record(r.dataset, em.name, em.pretrained, r.task, r.metrics)
            out.records.append(record)
            if r.details:
                out.details[f"{r.dataset}/{r.task}"] = r.details
    return out


def details_path(results_file: Path) -> Path:
    name = results_file.name[:-5] if results_file.name.endswith(".json") else results_file.name
    return results_file.with_name(name + DETAILS_SUFFIX)


def _write_json(obj, path: Path) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o644)

    atomic_write(path, write)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def write_outputs(out: EvalOutput, out_file: Path | None = None, out_dir: Path | None = None
                  ) -> list[Path]:
    """Write the records (and details) where asked; returns the files written."""
    written = []
    if out_file is not None:
        written.append(write_results(out.records, out_file))
        if out.details:
            _write_json(out.details, details_path(out_file))
            written.append(details_path(out_file))
    if out_dir is not None:
        for r in out.records:
            path = out_dir / f"{_slug(r['model'])}__{_slug(r['dataset'])}__{_slug(r['task'])}.json"
            _write_json(r, path)
            written.append(path)
        if out.details:
            _write_json(out.details, out_dir / "details.json")
            written.append(out_dir / "details.json")
    return written


def evaluate_spec(spec: str, tasks: Sequence[str], overrides: Sequence[str] = (),
                  out_file: Path | None = None, out_dir: Path | None = None,
                  progress: bool = True, memo: TowerMemo | None = None) -> EvalOutput:
    em = load_model_spec(spec, overrides)
    out = evaluate_model(em, tasks, progress=progress, memo=memo)
    write_outputs(out, out_file, out_dir)
    return out


def evaluate_run(run_dir: Path, tasks: list[str], out: Path | None = None) -> list[dict]:
    """Evaluate a run directory; the records (written to `out` when given)."""
    return evaluate_spec(str(run_dir), tasks, out_file=out).records


def _short(name: str) -> str:
    return LABELS.get(name, name)


def _value(key: str, v) -> str:
    if isinstance(v, float) and (key.endswith("median_rank") or key == "best_C"):
        return f"{v:g}"  # a rank or a grid value, not a share
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def summary_table(out: EvalOutput) -> str:
    """One row per record: dataset, task, its headline metrics, and the task's wall time."""
    rows = []
    for r in out.records:
        keys = HEADLINE.get(r["task"], tuple(r["metrics"])[:4])
        shown = ", ".join(f"{_short(k)} {_value(k, r['metrics'][k])}" for k in keys if k in r["metrics"])
        cli_task_name = cli_task(r["task"])
        rows.append({"dataset": r["dataset"], "task": r["task"], "metrics": shown,
                     "time": f"{out.seconds[cli_task_name]:.0f} s" if cli_task_name in out.seconds else ""})
    return format_table(rows, ["dataset", "task", "metrics", "time"])


def cli_task(record_task: str) -> str:
    """The `lipkit eval --tasks` name that writes records of task `record_task`."""
    return {"zeroshot_classification": "zeroshot", "linear_probe": "linear",
            "knn_classification": "knn", "zeroshot_retrieval": "retrieval",
            "ood_classification": "ood", "word_similarity": "text", "caption_probe": "text",
            "prototype_collapse": "collapse"}.get(record_task, record_task)


def print_results(records: list[dict]) -> None:
    """Every metric of every record (the old, wide table)."""
    rows = [record_row(r) for r in records]
    columns = ["dataset", "task"] + list(dict.fromkeys(k for r in records for k in r["metrics"]))
    print(format_table(rows, columns))
