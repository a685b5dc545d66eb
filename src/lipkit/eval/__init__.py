"""Evaluation tasks. Each takes a model with `encode_image` / `encode_text` (lipkit's or
open_clip's) and returns a flat metrics dict; `results` writes them in CLIP_benchmark's schema.

    from lipkit.eval import zeroshot, linear
    zeroshot.evaluate(model, tokenize, images, labels, classnames, templates)
    linear.evaluate(train_features, train_labels, test_features, test_labels)
"""
from . import linear, zeroshot
from .features import embed_images, embed_texts, eval_mode
from .linear import evaluate as evaluate_linear_probe
from .linear import evaluate_model as evaluate_linear_probe_model
from .results import (
    format_table,
    read_results,
    record_row,
    result_record,
    write_results,
)
from .zeroshot import classification_metrics, zeroshot_classifier
from .zeroshot import evaluate as evaluate_zeroshot

__all__ = [
    "classification_metrics",
    "embed_images",
    "embed_texts",
    "eval_mode",
    "evaluate_linear_probe",
    "evaluate_linear_probe_model",
    "evaluate_zeroshot",
    "format_table",
    "linear",
    "read_results",
    "record_row",
    "result_record",
    "write_results",
    "zeroshot",
    "zeroshot_classifier",
]
