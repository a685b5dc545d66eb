"""Zero-shot classification, linear probe and result records (lipkit.eval).

Every metric is checked against numbers worked out by hand in the comments next to it.
"""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _eval_data import in_memory
from lipkit.eval import (
    classification_metrics,
    embed_images,
    embed_texts,
    format_table,
    linear,
    read_results,
    record_row,
    result_record,
    write_results,
    zeroshot,
    zeroshot_classifier,
)


# ----------------------------------------------------------------------------- fakes
def tokenize(texts):
    """Prompts are "<class>|<template>" (templates "{c}|0", "{c}|1"): tokens are those 2 ids."""
    return torch.tensor([[int(part) for part in t.split("|")] for t in texts], dtype=torch.long)


class FakeCLIP(nn.Module):
    """encode_text looks up text_table[class_id, template_id]; an image's embedding is its
    pixels, flattened. Records the mode and grad state of every call."""

    def __init__(self, text_table):
        super().__init__()
        self.register_buffer("text_table", torch.as_tensor(text_table, dtype=torch.float32))
        self.calls = []

    def _out(self, kind, x, normalize):
        self.calls.append((kind, self.training, torch.is_grad_enabled(), x.shape[0]))
        return F.normalize(x, dim=-1) if normalize else x

    def encode_image(self, images, normalize=False):
        return self._out("image", images.flatten(1).float(), normalize)

    def encode_text(self, tokens, normalize=False):
        return self._out("text", self.text_table[tokens[:, 0], tokens[:, 1]], normalize)


TEMPLATES = ["{c}|0", "{c}|1"]


def one_hot_model(num_classes):
    """Both templates of class c embed to e_c, so the classifier is the identity."""
    eye = torch.eye(num_classes)
    return FakeCLIP(torch.stack([eye, eye], dim=1))


def as_images(vectors):
    return torch.tensor(vectors, dtype=torch.float32)[:, None, None, :]  # [N, 1, 1, D]


# ----------------------------------------------------------------------------- zero-shot
# 6 classes, class-c text = e_c, so score(image, c) = normalised image[c] and the ranking of an
# image is the ranking of its coordinates. Class 3, 4 and 5 have no test samples.
ZS_IMAGES = [
    [5, 4, 3, 2, 1, 0],  # label 0: top1 0 (hit)       top5 hit
    [1, 1, 0, 0, 0, 0],  # label 0: tie 0/1 -> 0 (hit)  top5 hit
    [0, 2, 0, 0, 0, 1],  # label 0: top1 1 (miss)      1, 5, ties 0,2,3,4 -> top5 {1,5,0,2,3} hit
    [0, 1, 2, 3, 4, 5],  # label 0: top1 5 (miss)      top5 {5,4,3,2,1} miss
    [2, 1, 0, 0, 0, 0],  # label 1: top1 0 (miss)      top5 hit
    [0, 3, 0, 0, 0, 0],  # label 1: top1 1 (hit)       top5 hit
    [0, 0, 1, 0, 0, 2],  # label 2: top1 5 (miss)      top5 hit
]
ZS_LABELS = [0, 0, 0, 0, 1, 1, 2]


def test_zeroshot_metrics_by_hand():
    model = one_hot_model(6)
    model.train()
    [result] = zeroshot.evaluate(*in_memory(model, tokenize, (as_images(ZS_IMAGES), torch.tensor(ZS_LABELS)),
                                            class_names=[str(c) for c in range(6)], templates=TEMPLATES),
                                 batch_size=3)
    metrics = result.metrics
    assert set(metrics) == {"acc1", "acc5", "mean_per_class_recall", "images"} and metrics["images"] == 7
    # top-1 hits: rows 0, 1 (tie -> lower index 0), 5  -> 3/7.  (tie -> higher index: 2/7)
    assert metrics["acc1"] == pytest.approx(3 / 7)
    # top-5 misses: only row 3 -> 6/7.  (ties toward higher index would also miss row 2: 5/7)
    assert metrics["acc5"] == pytest.approx(6 / 7)
    # recall: class 0 2/4, class 1 1/2, class 2 0/1; classes 3-5 have no samples and are left
    # out -> (0.5 + 0.5 + 0) / 3 = 1/3 (not 3/7 = accuracy, not 1/6 = counting them as 0)
    assert metrics["mean_per_class_recall"] == pytest.approx(1 / 3)

    # the model ran in eval mode without grad, in batches of <= 3, and got its mode back
    assert model.training
    assert all(not training and not grad for _, training, grad, _ in model.calls)
    assert [n for kind, *_, n in model.calls if kind == "image"] == [3, 3, 1]


def test_zeroshot_fewer_than_five_classes_and_topk_ties():
    model = one_hot_model(3)
    images = as_images([[1, 0, 0], [1, 0, 0]])
    classifier = zeroshot_classifier(model, tokenize, ["0", "1", "2"], TEMPLATES)
    metrics = classification_metrics(embed_images(model, images, 64) @ classifier.T, [0, 2], topk=(1, 2, 5))
    assert metrics["acc1"] == pytest.approx(1 / 2)  # both predict 0; the label-2 row misses
    # label-2 row ranks 0, then the 0-score tie 1, 2 -> top2 {0, 1}: miss
    assert metrics["acc2"] == pytest.approx(1 / 2)
    assert metrics["acc5"] == 1.0  # k = min(5, 3) = 3: every class is in the top 3
    assert metrics["mean_per_class_recall"] == pytest.approx((1 + 0) / 2)


def test_zeroshot_classifier_averages_normalised_template_embeddings():
    # class 0: template 0 -> (2, 0, 0), template 1 -> (0, 1, 0); class 1: (0, 0, 1) twice.
    table = torch.zeros(2, 2, 3)
    table[0, 0] = torch.tensor([2.0, 0, 0])
    table[0, 1] = torch.tensor([0.0, 1, 0])
    table[1, :] = torch.tensor([0.0, 0, 1])
    model = FakeCLIP(table)
    classifier = zeroshot_classifier(model, tokenize, ["0", "1"], TEMPLATES, batch_size=3)
    # normalise each -> (1,0,0), (0,1,0); mean (.5,.5,0); re-normalise -> (1,1,0)/sqrt(2).
    # (Averaging raw vectors would give (2,1,0)/sqrt(5); skipping re-normalisation (.5,.5,0).)
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(classifier, torch.tensor([[s, s, 0.0], [0.0, 0.0, 1.0]]))

    # An image at (0.2, 1, 0.75) scores (0.2 + 1)/sqrt(2) = 0.849 for class 0 and 0.75 for
    # class 1 -> class 0. With template 0 alone (0.2 vs 0.75) or raw averaging
    # (1.4/sqrt(5) = 0.626 vs 0.75) it would be class 1.
    [result] = zeroshot.evaluate(*in_memory(model, tokenize, (as_images([[0.2, 1.0, 0.75]]), [0]),
                                            class_names=["0", "1"], templates=TEMPLATES))
    metrics = result.metrics
    assert metrics["acc1"] == 1.0


def test_template_forms_agree_and_bad_templates_raise():
    table = torch.randn(3, 2, 4)
    model = FakeCLIP(table)
    names = ["0", "1", "2"]
    as_strings = zeroshot_classifier(model, tokenize, names, TEMPLATES)
    as_callables = zeroshot_classifier(model, tokenize, names,
                                       [lambda c: f"{c}|0", lambda c: f"{c}|1"])
    per_class = zeroshot_classifier(model, tokenize, names,
                                    {c: [f"{c}|0", f"{c}|1"] for c in names})
    torch.testing.assert_close(as_strings, as_callables)
    torch.testing.assert_close(as_strings, per_class)
    # a class with a single prompt: its row is that prompt's normalised embedding
    uneven = zeroshot_classifier(model, tokenize, names, {"0": ["0|1"], "1": ["1|0", "1|1"],
                                                          "2": ["2|0", "2|1"]})
    torch.testing.assert_close(uneven[0], F.normalize(table[0, 1], dim=0))
    torch.testing.assert_close(uneven[1:], as_strings[1:])

    with pytest.raises(ValueError, match="placeholder"):
        zeroshot_classifier(model, tokenize, names, ["a photo"])
    with pytest.raises(ValueError, match="not a single string"):
        zeroshot_classifier(model, tokenize, names, "{c}|0")
    with pytest.raises(ValueError, match="no prompts"):
        zeroshot_classifier(model, tokenize, names, {"0": ["0|0"]})


def test_classification_metrics_rejects_bad_input():
    scores = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        classification_metrics(scores, [0, 3])
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(scores, [0])
    with pytest.raises(ValueError, match="integer"):
        classification_metrics(scores, [0.0, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        classification_metrics(torch.full((2, 3), float("nan")), [0, 1])
    with pytest.raises(ValueError, match=r"labels must have shape \[2\]"):
        zeroshot.evaluate(*in_memory(one_hot_model(3), tokenize, (as_images([[1, 0, 0]] * 2), [0, 1, 2]),
                                     class_names=["0", "1", "2"], templates=TEMPLATES))


# ----------------------------------------------------------------------------- features
def test_embed_images_and_texts_batching_normalisation_and_hook():
    model = one_hot_model(4)
    images = torch.randn(5, 1, 2, 2)
    flat = images.flatten(1)
    torch.testing.assert_close(embed_images(model, images, batch_size=2), F.normalize(flat, dim=-1))
    torch.testing.assert_close(embed_images(model, images, 2, normalize=False), flat)
    doubled = embed_images(model, images, 4, normalize=False, feature_fn=lambda x: 2 * x.flatten(1))
    torch.testing.assert_close(doubled, 2 * flat)
    texts = embed_texts(model, tokenize, ["3|0", "1|1", "0|0"], batch_size=2)
    torch.testing.assert_close(texts, torch.eye(4)[[3, 1, 0]])
    with pytest.raises(ValueError, match="batch_size"):
        embed_images(model, images, 0)
    with pytest.raises(ValueError, match="non-empty"):
        embed_images(model, images[:0], 2)


def test_model_mode_restored_when_encoding_fails():
    class Broken(FakeCLIP):
        def encode_image(self, images, normalize=False):
            raise RuntimeError("boom")

    model = Broken(torch.zeros(1, 1, 1)).train()
    with pytest.raises(RuntimeError, match="boom"):
        embed_images(model, torch.zeros(2, 1, 1, 1), 2)
    assert model.training


# ----------------------------------------------------------------------------- linear probe
def blobs(rng, centers, per_class, std):
    x = np.concatenate([c + std * rng.normal(size=(per_class, len(c))) for c in centers])
    y = np.repeat(np.arange(len(centers)), per_class)
    return x, y


def test_linear_probe_separable_blobs():
    rng = np.random.default_rng(0)
    centers = 10 * np.eye(5)[:3]  # 3 classes, 10 apart in 5-D; noise std 0.5 -> separable
    x_train, y_train = blobs(rng, centers, 30, 0.5)
    x_test, y_test = blobs(rng, centers, 20, 0.5)
    metrics = linear.evaluate_features(torch.from_numpy(x_train).float(), torch.from_numpy(y_train),
                              x_test, y_test)
    assert set(metrics) == {"acc1", "acc5", "mean_per_class_recall", "best_C"}
    assert metrics["acc1"] == metrics["acc5"] == metrics["mean_per_class_recall"] == 1.0
    assert metrics["best_C"] in linear.DEFAULT_C_GRID


def test_linear_probe_unseen_test_class_by_hand():
    rng = np.random.default_rng(1)
    x_train, y_train = blobs(rng, [[-10.0, 0.0], [10.0, 0.0]], 20, 0.5)
    # test: 4 of class 0, 4 of class 1 (easy), 2 of class 2, which training never saw
    x_test = np.concatenate([blobs(rng, [[-10.0, 0.0], [10.0, 0.0]], 4, 0.5)[0],
                             [[0.0, 10.0], [0.0, -10.0]]])
    y_test = np.array([0] * 4 + [1] * 4 + [2, 2])
    metrics = linear.evaluate_features(x_train, y_train, x_test, y_test, topk=(1, 2, 5))
    assert metrics["acc1"] == pytest.approx(8 / 10)  # class 2 is never predicted
    assert metrics["acc2"] == pytest.approx(8 / 10)  # ... nor ranked above a seen class
    assert metrics["acc5"] == 1.0  # k = min(5, 3 classes)
    assert metrics["mean_per_class_recall"] == pytest.approx((1 + 1 + 0) / 3)


def test_linear_probe_picks_strong_regularisation_on_noisy_data():
    # 100-D isotropic Gaussians whose means are 3 apart, 300 training samples with 30% of the
    # labels flipped: the class-mean direction is optimal, and weak regularisation fits the
    # noise (n/d = 1.5 with val_fraction=0.5 is near the separability threshold).
    rng = np.random.default_rng(0)
    mean = rng.normal(size=100)
    mean *= 1.5 / np.linalg.norm(mean)

    def sample(n, flip):
        y = np.arange(n) % 2
        x = np.where(y[:, None] == 1, mean, -mean) + rng.normal(size=(n, 100))
        flipped = rng.random(n) < flip
        return x, np.where(flipped, 1 - y, y)

    x_train, y_train = sample(300, 0.3)
    x_test, y_test = sample(1000, 0.0)
    chosen = linear.evaluate_features(x_train, y_train, x_test, y_test, val_fraction=0.5)
    assert chosen["best_C"] <= 1e-2  # the strong end of the 1e-3 .. 1e2 grid
    weak = linear.evaluate_features(x_train, y_train, x_test, y_test, C_grid=[100.0])
    assert weak["best_C"] == 100.0
    assert chosen["acc1"] > weak["acc1"] + 0.05


def test_linear_probe_picks_weak_regularisation_on_correlated_features():
    # x = (s + z, z) with a large shared nuisance z: the label lives in x0 - x1, a direction a
    # heavily shrunk (class-mean-like) solution cannot find; only large C reaches it.
    rng = np.random.default_rng(0)

    def sample(n):
        y = np.arange(n) % 2
        s = (y - 0.5) + 0.1 * rng.normal(size=n)
        z = 50 * rng.normal(size=n)
        return np.stack([s + z, z], axis=1), y

    x_train, y_train = sample(200)
    x_test, y_test = sample(400)
    metrics = linear.evaluate_features(x_train, y_train, x_test, y_test)
    assert metrics["best_C"] == max(linear.DEFAULT_C_GRID)
    assert metrics["acc1"] > 0.95


def test_stratified_split():
    labels = np.array([0] * 10 + [1] * 5 + [2])
    fit, val = linear.stratified_split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([fit, val]).tolist()) == list(range(16))
    assert np.bincount(labels[val], minlength=3).tolist() == [2, 1, 0]  # round(2.0), round(1.0), 0
    assert set(labels[fit]) == {0, 1, 2}  # every class keeps a sample to fit on
    again = linear.stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(val, again[1])


@pytest.mark.parametrize("change, message", [
    (dict(train_features=np.zeros(6)), r"train_features must have shape \[N, D\]"),
    (dict(train_labels=np.array([0, 1, 0, 1, 0])), r"train_labels must have shape \[6\]"),
    (dict(test_features=np.zeros((2, 3))), "2 dimensions but test_features have 3"),
    (dict(train_labels=np.array([0.0, 1, 0, 1, 0, 1])), "integer class indices"),
    (dict(test_labels=np.array([-1, 0])), "non-negative"),
    (dict(train_labels=np.zeros(6, dtype=int)), "at least 2 classes"),
    (dict(train_features=np.full((6, 2), np.nan)), "finite"),
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(C_grid=[]), "C_grid"),
    (dict(C_grid=[1.0, -1.0]), "C_grid"),
    (dict(train_labels=np.array([0, 1, 2, 3, 4, 5])), "too few training samples"),
])
def test_linear_probe_errors(change, message):
    args = dict(train_features=np.arange(12.0).reshape(6, 2),
                train_labels=np.array([0, 1, 0, 1, 0, 1]),
                test_features=np.zeros((2, 2)), test_labels=np.array([0, 1]))
    args.update(change)
    with pytest.raises(ValueError, match=message):
        linear.evaluate_features(**args)


def test_single_C_skips_validation():
    x = np.array([[-1.0], [1.0], [-2.0], [2.0]])  # 2 samples a class: too few to split
    metrics = linear.evaluate_features(x, [0, 1, 0, 1], x, [0, 1, 0, 1], C_grid=[1.0])
    assert metrics["best_C"] == 1.0 and metrics["acc1"] == 1.0


def test_linear_probe_on_model_with_feature_fn():
    rng = np.random.default_rng(0)
    x, y = blobs(rng, 10 * np.eye(4)[:2], 20, 0.5)
    images = torch.from_numpy(x).float()[:, None, None, :]
    model = one_hot_model(4).train()
    seen = []

    def pre_projection(batch):
        seen.append(batch.shape[0])
        return batch.flatten(1)

    em, data = in_memory(model, tokenize, (images, y), train=(images, y), image_features=pre_projection)
    metrics = linear.evaluate(em, data, batch_size=16)[0].metrics
    assert metrics["acc1"] == 1.0
    assert seen == [16, 16, 8, 16, 16, 8]  # train then test, in batches
    assert linear.evaluate(*in_memory(model, tokenize, (images, y), train=(images, y)))[0].metrics["acc1"] == 1.0
    assert model.training


# ----------------------------------------------------------------------------- results
def test_result_record_has_clip_benchmark_keys():
    record = result_record("cifar10", "ViT-B-32", "laion2b", "zeroshot_classification",
                           {"acc1": np.float32(0.5), "acc5": torch.tensor(0.75),
                            "mean_per_class_recall": 0.25})
    assert list(record) == ["dataset", "model", "pretrained", "task", "metrics", "language"]
    assert record["language"] == "en"
    assert record["metrics"] == {"acc1": 0.5, "acc5": 0.75, "mean_per_class_recall": 0.25}
    assert all(type(v) is float for v in record["metrics"].values())
    assert record_row(record)["acc5"] == 0.75 and "metrics" not in record_row(record)
    with pytest.raises(TypeError, match="not a scalar"):
        result_record("d", "m", "p", "t", {"acc1": [1, 2]})


def test_write_results_round_trip_and_atomicity(tmp_path):
    records = [
        result_record("fashion", "xclip-tiny", "runs/xclip", "zeroshot_classification",
                      {"acc1": 0.61, "acc5": 0.97, "mean_per_class_recall": 0.6}),
        result_record("fashion", "xclip-tiny", "runs/xclip", "linear_probe",
                      {"acc1": 0.8, "acc5": 0.99, "mean_per_class_recall": 0.79, "best_C": 0.1}),
    ]
    path = tmp_path / "out" / "results.json"
    write_results(records, path)
    assert json.loads(path.read_text()) == records
    assert read_results(path) == records
    assert path.read_text().startswith('[\n  {\n    "dataset"')  # indent 2

    # a failed write leaves the previous file untouched and no temp file behind
    with pytest.raises(TypeError):
        write_results([{"metrics": object()}], path)
    assert read_results(path) == records
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_format_table():
    rows = [{"dataset": "cifar10", "acc1": 0.5, "n": 3}, {"dataset": "fashion", "acc1": 0.25}]
    assert format_table(rows, ["dataset", "acc1", "n"]) == "\n".join([
        "| dataset |   acc1 |   n |",
        "|---------|-------:|----:|",
        "| cifar10 | 0.5000 |   3 |",
        "| fashion | 0.2500 |     |",
    ])


def test_validation_split_is_training_data_the_run_held_back():
    import numpy as np

    from lipkit.config import DataConfig, EvalConfig
    from lipkit.data import load_fashion_mnist
    from lipkit.data.tuxpaint import tuxpaint_holdout_split, tuxpaint_validation_split
    from lipkit.eval.errors import EvalError
    from lipkit.eval.datasets import open_dataset

    images, labels = load_fashion_mnist("train")
    d = open_dataset("fashion-mnist", EvalConfig(split="validation", test_limit=50, linear_train_limit=5000),
                     DataConfig(train_limit=1000))
    assert d.name == "fashion-mnist:validation"
    assert len(d.train) == 1000 and np.array_equal(d.train.images, images[:1000])  # probes: trained-on images
    assert np.array_equal(d.test.images, images[1000:1050]) and np.array_equal(d.test.labels, labels[1000:1050])
    names = d.class_names
    assert all(names[y] in c for y, c in zip(d.test.labels, d.test.caption))
    with pytest.raises(EvalError, match="data.train_limit is 0"):
        open_dataset("fashion-mnist", EvalConfig(split="validation"), DataConfig())

    fit, validation = tuxpaint_validation_split()
    train, holdout = tuxpaint_holdout_split()
    ids = lambda items: {it.id for it in items}  # noqa: E731
    assert len(validation) == 150 and ids(fit) | ids(validation) == ids(train)
    assert not ids(validation) & ids(holdout) and not ids(fit) & ids(validation)
    t = open_dataset("tuxpaint", EvalConfig(split="validation"))
    assert t.name == "tuxpaint:validation" and len(t.test) == 150 and len(t.train) == len(fit)
