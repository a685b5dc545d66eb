"""Evaluation tasks. Each takes a model with `encode_image` / `encode_text` (lipkit's or
open_clip's) and returns a flat metrics dict; `results` writes them in CLIP_benchmark's schema.

    from lipkit.eval import zeroshot, linear, knn, retrieval, ood, text, collapse
    zeroshot.evaluate(model, tokenize, images, labels, classnames, templates)
    linear.evaluate(train_features, train_labels, test_features, test_labels)
    knn.evaluate(train_features, train_labels, test_features, test_labels, k=20)
    retrieval.evaluate(image_embeds, text_embeds, text_image, captions)
    ood.evaluate(model, tokenize, clean, shifted, classnames, templates, probe=...)
    text.evaluate(model, tokenize, word_pairs=..., captions=...)
    collapse.evaluate(image_prototype_logits, text_prototype_logits, temperature=0.1)

`lipkit.eval.runner` runs them on a run directory or an open_clip model (`lipkit eval`), on
the datasets `open_dataset` opens: a built-in name, or a path to labelled images (class
folders, a CSV/TSV/JSONL table, WebDataset shards in CLIP_benchmark's layout).

    open_dataset("photos/", EvalConfig())  # EvalData: name, class_names, templates, train, test
"""
from . import collapse, knn, linear, metrics, ood, retrieval, text, zeroshot
from .features import embed_images, embed_texts, eval_mode
from .linear import evaluate as evaluate_linear_probe
from .linear import evaluate_model as evaluate_linear_probe_model
from .metrics import classification_metrics
from .results import (
    format_table,
    read_results,
    record_row,
    result_record,
    write_results,
)
from .sources import EvalData, Split, open_dataset
from .zeroshot import evaluate as evaluate_zeroshot
from .zeroshot import zeroshot_classifier

__all__ = [
    "EvalData",
    "Split",
    "classification_metrics",
    "collapse",
    "embed_images",
    "embed_texts",
    "eval_mode",
    "evaluate_linear_probe",
    "evaluate_linear_probe_model",
    "evaluate_zeroshot",
    "format_table",
    "knn",
    "linear",
    "metrics",
    "ood",
    "open_dataset",
    "read_results",
    "record_row",
    "result_record",
    "retrieval",
    "text",
    "write_results",
    "zeroshot",
    "zeroshot_classifier",
]
