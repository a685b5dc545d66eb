"""`lipkit eval RUN_DIR`: load a run, run the requested tasks on Fashion-MNIST, write records."""
from __future__ import annotations

from pathlib import Path

import torch

from lipkit.checkpoint import load_run
from lipkit.data import fashion_mnist_prompts, load_fashion_mnist
from lipkit.data.fashion_mnist import normalize
from lipkit.eval import linear, zeroshot
from lipkit.eval.features import embed_images
from lipkit.eval.results import format_table, record_row, result_record, write_results

DATASET = "fashion-mnist"
TASK_NAMES = {"zeroshot": "zeroshot_classification", "linear": "linear_probe"}


def _split(name: str, limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_fashion_mnist(name)
    if limit:
        images, labels = images[:limit], labels[:limit]
    return normalize(images), torch.tensor(labels, dtype=torch.long)


def evaluate_run(run_dir: Path, tasks: list[str], out: Path | None = None) -> list[dict]:
    model, tokenizer, cfg = load_run(run_dir)
    test_images, test_labels = _split("test")
    batch = cfg.eval.batch_size
    records = []
    for task in tasks:
        if task == "zeroshot":
            prompts = fashion_mnist_prompts()
            metrics = zeroshot.evaluate(
                model, tokenizer, test_images, test_labels, prompts.class_names, prompts.templates, batch_size=batch
            )
        elif task == "linear":
            # Representation quality of the image tower itself (pre-projection features).
            train_images, train_labels = _split("train", cfg.eval.linear_train_limit)
            train_f = embed_images(model, train_images, batch, normalize=False, feature_fn=model.vision)
            test_f = embed_images(model, test_images, batch, normalize=False, feature_fn=model.vision)
            metrics = linear.evaluate(train_f, train_labels, test_f, test_labels, seed=cfg.train.seed)
        else:
            raise ValueError(f"unknown task {task!r}")
        records.append(result_record(DATASET, str(run_dir), str(run_dir), TASK_NAMES[task], metrics))
    if out is not None:
        write_results(records, out)
    return records


def print_results(records: list[dict]) -> None:
    rows = [record_row(r) for r in records]
    columns = ["dataset", "task"] + list(dict.fromkeys(k for r in records for k in r["metrics"]))
    print(format_table(rows, columns))
