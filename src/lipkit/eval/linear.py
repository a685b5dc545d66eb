"""Linear probe: multinomial logistic regression on frozen features.

Features are standardised (statistics of the training set), the inverse regularisation strength
C (1 / weight decay) is chosen on a stratified validation split of the training set over a log
grid, and the model is refitted on all training data with that C before scoring the test set.
`fit` returns the probe itself, so one fit can score several test sets: `evaluate(model, data)`,
the task, fits `train_probe` once per `Context`, and the OOD task scores the same probe.
`evaluate_features` is the probe on features you already have.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits  # installed with scikit-learn

from . import adamw_probe
from .context import Context
from .metrics import classification_metrics
from .adapter import EvalModel
from .registry import LINEAR_PROBE
from .results import TaskResult
from .splits import EvalData, stratified_split

DEFAULT_C_GRID = tuple(np.logspace(-3, 2, 6).tolist())  # 1e-3, 1e-2, ..., 1e2


def _features(x, name: str) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have shape [N, D] with N, D > 0, got {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite numbers (got NaN/inf or dtype {x.dtype})")
    return x.astype(np.float64, copy=False)


def _labels(y, n: int, name: str) -> np.ndarray:
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}] to match the features, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must be integer class indices, got dtype {y.dtype}")
    if y.min() < 0:
        raise ValueError(f"{name} must be non-negative class indices, got {y.min()}")
    return y.astype(np.int64, copy=False)


def _scores(model, x: np.ndarray, num_classes: int) -> torch.Tensor:
    """Logits [N, num_classes] (same ranking as the probabilities, without log(0) = -inf ties);
    classes never seen in training score -inf."""
    logits = model.decision_function(x)
    if logits.ndim == 1:  # binary: one logit for classes_[1]; ties go to classes_[0] as in sklearn
        logits = np.stack([np.zeros_like(logits), logits], axis=1)
    scores = np.full((x.shape[0], num_classes), -np.inf)
    scores[:, model.classes_] = logits
    return torch.from_numpy(scores)


def _probe(C: float, max_iter: int, seed: int):
    # lbfgs fits the multinomial (softmax) loss for >2 classes; the intercept is not penalised.
    return make_pipeline(StandardScaler(), LogisticRegression(
        C=C, solver="lbfgs", max_iter=max_iter, random_state=seed))


def select_C(x: np.ndarray, y: np.ndarray, C_grid: Sequence[float], val_fraction: float,
             seed: int, max_iter: int) -> float:
    """The C of the grid with the best validation top-1 accuracy; ties go to the smaller C
    (stronger regularisation)."""
    fit, val = stratified_split(y, val_fraction, seed)
    if len(val) == 0:
        raise ValueError("too few training samples to hold out a validation split; "
                         "pass a single value in C_grid to skip the search")
    num_classes = int(y.max()) + 1
    scaler = StandardScaler().fit(x[fit])
    x_fit, x_val = scaler.transform(x[fit]), scaler.transform(x[val])
    # One estimator swept from strong to weak regularisation, each fit warm-started from the
    # last: the weak-C fits, the slow ones, start near their solution.
    clf = LogisticRegression(solver="lbfgs", max_iter=max_iter, warm_start=True,
                             random_state=seed)
    best_C, best_acc = None, -1.0
    for C in sorted(C_grid):
        clf.set_params(C=C).fit(x_fit, y[fit])
        acc = classification_metrics(_scores(clf, x_val, num_classes), y[val], (1,))["acc1"]
        if acc > best_acc:
            best_C, best_acc = C, acc
    return float(best_C)


def few_shot_indices(labels, k: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of `k` randomly chosen samples of each class (all of a class with fewer)."""
    labels = np.asarray(labels)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"few-shot k must be a positive integer, got {k!r}")
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


@dataclass
class LinearProbe:
    """A fitted probe: standardisation + logistic regression, and the C it was fitted with."""
    pipeline: object
    best_C: float
    num_classes: int
    dim: int

    @property
    def settings(self) -> dict:
        """How it was fitted, for the record."""
        return {"best_C": self.best_C}

    def scores(self, features) -> torch.Tensor:
        """Logits [N, num_classes]; classes never seen in training score -inf."""
        x = _features(features, "features")
        if x.shape[1] != self.dim:
            raise ValueError(f"the probe was fitted on {self.dim}-dimensional features, "
                             f"got {x.shape[1]}")
        return _scores(self.pipeline, x, self.num_classes)

    def evaluate(self, features, labels, topk: Sequence[int] = (1, 5)) -> dict[str, float]:
        """{"acc{k}", "mean_per_class_recall"} of the probe on (features, labels)."""
        x = _features(features, "features")
        y = _labels(labels, x.shape[0], "labels")
        scores = self.scores(x)
        num_classes = max(self.num_classes, int(y.max()) + 1)
        if num_classes > scores.shape[1]:  # a class the probe never saw: never predicted
            pad = torch.full((scores.shape[0], num_classes - scores.shape[1]), -math.inf,
                             dtype=scores.dtype)
            scores = torch.cat([scores, pad], dim=1)
        return classification_metrics(scores, y, topk)


def fit(train_features, train_labels, *, val_fraction: float = 0.2,
        C_grid: Sequence[float] | None = None, seed: int = 0, max_iter: int = 1000,
        few_shot_k: int = 0, threads: int | None = 1) -> LinearProbe:
    """Choose C on a stratified validation split of the training set over `C_grid` (a log grid
    of inverse weight decays by default), then refit on all of it. `few_shot_k` > 0 keeps only
    k samples per class (chosen with `seed`) before anything else."""
    x_train = _features(train_features, "train_features")
    y_train = _labels(train_labels, x_train.shape[0], "train_labels")
    if few_shot_k:
        keep = few_shot_indices(y_train, few_shot_k, seed)
        x_train, y_train = x_train[keep], y_train[keep]
    if len(np.unique(y_train)) < 2:
        raise ValueError("train_labels must contain at least 2 classes")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    C_grid = DEFAULT_C_GRID if C_grid is None else tuple(float(c) for c in C_grid)
    if not C_grid or not all(np.isfinite(c) and c > 0 for c in C_grid):
        raise ValueError(f"C_grid must be non-empty positive finite values, got {C_grid}")

    # lbfgs often stops at max_iter on weakly regularised grid points; the validation score
    # already judges those fits, so the warning only adds noise.
    with threadpool_limits(limits=threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        best_C = C_grid[0] if len(C_grid) == 1 else select_C(
            x_train, y_train, C_grid, val_fraction, seed, max_iter)
        pipeline = _probe(best_C, max_iter, seed).fit(x_train, y_train)
    return LinearProbe(pipeline, float(best_C), int(y_train.max()) + 1, x_train.shape[1])


def evaluate_features(train_features, train_labels, test_features, test_labels, *,
                      val_fraction: float = 0.2, C_grid: Sequence[float] | None = None, seed: int = 0,
                      max_iter: int = 1000, topk: Sequence[int] = (1, 5), few_shot_k: int = 0,
                      threads: int | None = 1) -> dict[str, float]:
    """Linear-probe accuracy -> {"acc1", "acc5", "mean_per_class_recall", "best_C"}.

    Features are [N, D] arrays or tensors, labels [N] integer class indices. Metrics follow
    `classification_metrics` (ties toward the lower class index; a test class never seen in
    training is never predicted).

    `threads` caps the BLAS/OpenMP threads of the fits (None: the libraries' default). One
    thread is the default because lbfgs on probe-sized problems is dominated by small matrix
    products: on 2 shared cores a 10k x 128 probe took 0.6 s with one thread and 1.4-12 s with
    two, and a 20k x 512 x 100-class fit 4.6 s against 35-40 s.
    """
    x_train = _features(train_features, "train_features")
    x_test = _features(test_features, "test_features")
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"train_features have {x_train.shape[1]} dimensions but test_features "
                         f"have {x_test.shape[1]}")
    _labels(train_labels, x_train.shape[0], "train_labels")
    y_test = _labels(test_labels, x_test.shape[0], "test_labels")
    probe = fit(x_train, train_labels, val_fraction=val_fraction, C_grid=C_grid, seed=seed,
                max_iter=max_iter, few_shot_k=few_shot_k, threads=threads)
    metrics = probe.evaluate(x_test, y_test, topk)
    metrics["best_C"] = probe.best_C
    return metrics


def train_probe(ctx: Context) -> LinearProbe | adamw_probe.AdamWProbe:
    """The probe on the context's training features (eval.linear_solver: lipkit's, or
    CLIP_benchmark's); `ctx.once(train_probe)` fits it once for the linear and OOD tasks."""
    c = ctx.cfg
    if c.linear_solver == "adamw":
        a = c.adamw
        return adamw_probe.fit(ctx.features("train"), ctx.split("train").labels, lr=a.lr, epochs=a.epochs,
                               batch_size=a.batch_size, weight_decay=a.weight_decay, seed=ctx.em.seed,
                               few_shot_k=c.few_shot_k)
    return fit(ctx.features("train"), ctx.split("train").labels, seed=ctx.em.seed, few_shot_k=c.few_shot_k)


def evaluate(model: EvalModel, data: EvalData, *, cache: Context | None = None, **settings
             ) -> list[TaskResult]:
    """The probe fitted on `data`'s training features and scored on the probes' test features
    (the test split, or the part of it the probes do not train on): one linear_probe result,
    {"acc1", "acc5" (more than 5 classes), "mean_per_class_recall", "best_C" (or with
    eval.linear_solver adamw, CLIP_benchmark's probe: "solver", "lr", "epochs", "batch_size",
    "weight_decay"), "features", "few_shot_k", "train_samples", "images"}. The features are the pooled tower outputs ("pre")
    when eval.features is pre and the model exposes them, else the embeddings ("post"). Needs
    labels, two classes or more to train on."""
    ctx = Context.of(model, data, cache, settings)
    ctx.require("linear", labels=True, probe_classes=True, choose_C=ctx.cfg.linear_solver == "lbfgs")
    probe = ctx.once(train_probe)
    test = ctx.split("probe_test")
    metrics = probe.evaluate(ctx.features("probe_test"), test.labels, ctx.topk("linear"))
    metrics.update(probe.settings, features=ctx.feature_kind, few_shot_k=ctx.cfg.few_shot_k,
                   train_samples=len(ctx.data.train), images=len(test))
    return [TaskResult(ctx.data.name, LINEAR_PROBE, metrics)]
