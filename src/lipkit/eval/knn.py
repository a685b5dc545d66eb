"""Weighted k-nearest-neighbour classification on frozen features (as in DINO / solo-learn).

Features are L2-normalised, so similarity is the cosine. Each test sample takes its k most
similar training samples; neighbour j votes for its class with weight exp(cos_j / T). The class
scores are the summed votes, scored with `classification_metrics` (top-k accuracy, mean
per-class recall). Neighbours tied on similarity rank the lower training index first, and the
test set is processed in chunks so the similarity matrix never exceeds chunk x N_train.
`evaluate(model, data)` is the task; `evaluate_features` the same on features you already have.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .context import Context
from .metrics import as_labels, classification_metrics, cosine_scores, to_tensor, unit_rows
from .adapter import EvalModel
from .registry import KNN_CLASSIFICATION
from .results import TaskResult
from .splits import EvalData


def nearest(sims: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [rows, min(k, N)] of the k largest entries per row, ties at the k-th value going
    to the lower index (the set a stable descending sort would give, found in linear time).
    Within a row the indices come in increasing order."""
    k = min(k, sims.shape[1])
    kth = torch.topk(sims, k, dim=1).values[:, -1:]
    greater = sims > kth
    equal = sims == kth
    room = k - greater.sum(dim=1, keepdim=True)  # how many of the tied entries fit
    chosen = greater | (equal & (equal.cumsum(dim=1, dtype=torch.int32) <= room))
    return chosen.nonzero()[:, 1].reshape(sims.shape[0], k)


def vote_scores(train_features, train_labels, test_features, *, k: int = 20,
                temperature: float = 0.07, num_classes: int | None = None,
                chunk_size: int = 1024) -> torch.Tensor:
    """Class scores [N_test, C]: the summed weights exp(cos / temperature) of each test sample's
    k nearest training samples, per class."""
    train = unit_rows(train_features, "train_features")
    test = unit_rows(test_features, "test_features")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train_features have {train.shape[1]} dimensions but test_features "
                         f"have {test.shape[1]}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    labels = to_tensor(train_labels)
    num_classes = num_classes or int(labels.max()) + 1
    labels = as_labels(labels, train.shape[0], num_classes)

    out = []
    for start in range(0, test.shape[0], chunk_size):
        sims = cosine_scores(test[start:start + chunk_size], train)  # [chunk, N_train]
        idx = nearest(sims, k)
        weights = (sims.gather(1, idx).double() / temperature).exp()
        scores = torch.zeros(idx.shape[0], num_classes, dtype=torch.float64)
        scores.scatter_add_(1, labels[idx], weights)
        out.append(scores)
    return torch.cat(out)


def evaluate_features(train_features, train_labels, test_features, test_labels, *, k: int = 20,
                      temperature: float = 0.07, topk: Sequence[int] = (1, 5), chunk_size: int = 1024
                      ) -> dict[str, float]:
    """Weighted-kNN accuracy -> {"acc1", "acc5", "mean_per_class_recall"}."""
    train_labels = to_tensor(train_labels)
    test_labels = to_tensor(test_labels)
    if train_labels.numel() == 0 or test_labels.numel() == 0:
        raise ValueError("train_labels and test_labels must be non-empty")
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    scores = vote_scores(train_features, train_labels, test_features, k=k,
                         temperature=temperature, num_classes=num_classes, chunk_size=chunk_size)
    return classification_metrics(scores, test_labels, topk)


def evaluate(model: EvalModel, data: EvalData, *, cache: Context | None = None, **settings
             ) -> list[TaskResult]:
    """Weighted kNN of the probes' test features (`linear`'s) among their training features
    (eval.knn_k neighbours, eval.knn_temperature): one knn_classification result, {"acc1",
    "acc5" (more than 5 classes), "mean_per_class_recall", "k", "temperature", "features",
    "images"}. Needs labels, two classes or more in the training set."""
    ctx = Context.of(model, data, cache, settings)
    ctx.require("knn", labels=True, probe_classes=True)
    c = ctx.cfg
    train, test = ctx.split("train"), ctx.split("probe_test")
    metrics = evaluate_features(ctx.features("train"), train.labels, ctx.features("probe_test"),
                                test.labels, k=c.knn_k, temperature=c.knn_temperature,
                                topk=ctx.topk("knn"), chunk_size=c.chunk_size)
    metrics.update(k=c.knn_k, temperature=c.knn_temperature, features=ctx.feature_kind, images=len(test))
    return [TaskResult(ctx.data.name, KNN_CLASSIFICATION, metrics)]
