"""Retrieval, kNN, collapse, text, OOD and few-shot probe (lipkit.eval): every metric on a case
worked out by hand in the comments next to it, and chunked == unchunked."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _eval_data import in_memory
from lipkit.eval import collapse, knn, linear, ood, retrieval, text
from lipkit.eval.errors import EvalError
from lipkit.eval.metrics import stable_topk

# ----------------------------------------------------------------------------- retrieval
# 3 images and 4 texts in 2-D. Image 0 has two captions ("a", "b"); "a" was also written for
# image 2 (a duplicate caption); "b" and "c" embed identically (a tie).
R_IMAGES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
R_TEXTS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
R_TEXT_IMAGE = [0, 0, 1, 2]
R_CAPTIONS = ["a", "b", "c", "a"]


def test_retrieval_by_hand_with_ties_several_and_duplicate_captions():
    i2t, t2i = retrieval.retrieval_ranks(R_IMAGES, R_TEXTS, R_TEXT_IMAGE, R_CAPTIONS)
    # distinct texts a=(1,0), b=(0,1), c=(0,1).
    # image 0 (1,0): a 1, b 0, c 0; hits {a, b} -> a first -> rank 1
    # image 1 (0,1): a 0, b 1, c 1; hits {c}; b ties c and has the lower index -> rank 2
    # image 2 (1,1)/sqrt2: all three tie at .707; hits {a}, index 0 -> rank 1
    assert i2t.tolist() == [1, 2, 1]
    # text a: i0 1, i1 0, i2 .707; hits {i0, i2} -> rank 1
    # text b: i0 0, i1 1, i2 .707; hits {i0} -> i1 and i2 come first -> rank 3
    # text c: hits {i1} -> rank 1
    assert t2i.tolist() == [1, 3, 1]
    metrics = retrieval.rank_metrics(*retrieval.retrieval_ranks(R_IMAGES, R_TEXTS, R_TEXT_IMAGE, R_CAPTIONS),
                                     recall_at=(1, 2, 5))
    assert metrics == {
        "image_retrieval_recall@1": pytest.approx(2 / 3), "image_retrieval_recall@2": pytest.approx(2 / 3),
        "image_retrieval_recall@5": 1.0,
        "text_retrieval_recall@1": pytest.approx(2 / 3), "text_retrieval_recall@2": 1.0,
        "text_retrieval_recall@5": 1.0,
        "image_retrieval_median_rank": 1.0, "text_retrieval_median_rank": 1.0,
    }


def test_retrieval_without_caption_identity_counts_duplicates_as_misses():
    # Each text on its own (CLIP_benchmark's rule): image 2 must find t3, which ties with
    # t0, t1, t2 at .707 and comes last -> rank 4; text t3 ("a" for image 2) ranks i0 first.
    i2t, t2i = retrieval.retrieval_ranks(R_IMAGES, R_TEXTS, R_TEXT_IMAGE)
    assert i2t.tolist() == [1, 2, 4]
    assert t2i.tolist() == [1, 3, 1, 2]
    metrics = retrieval.rank_metrics(i2t, t2i, recall_at=(1,))
    assert metrics["image_retrieval_median_rank"] == 1.5  # median of 1, 1, 2, 3
    assert metrics["text_retrieval_median_rank"] == 2.0


def test_retrieval_ties_across_chunks_and_chunked_equals_unchunked():
    # 7 identical gallery texts: the one hit (index 5) ranks 6th whatever the chunking.
    images = torch.tensor([[1.0, 2.0]])
    texts = torch.tensor([[3.0, 1.0]] * 7)
    for chunk in (1, 2, 3, 4, 100):
        i2t, _ = retrieval.retrieval_ranks(images, texts, [0] * 7, [f"t{i}" for i in range(7)],
                                           chunk_size=chunk)
        # image 0's hits are all 7 texts: the first one ranks 1
        assert i2t.tolist() == [1]
    hits = retrieval._Positives([np.array([5])])
    for chunk in (1, 2, 3, 4, 100):
        assert retrieval.ranks(F.normalize(images.double()), F.normalize(texts.double()), hits,
                               chunk).tolist() == [6]

    rng = np.random.default_rng(0)
    image_embeds = torch.from_numpy(rng.normal(size=(50, 8))).float()
    image_embeds[10] = image_embeds[3]  # exact duplicates tie
    text_image = np.concatenate([np.arange(50), rng.integers(0, 50, 40)])
    text_embeds = image_embeds[text_image] + 0.8 * torch.from_numpy(rng.normal(size=(90, 8))).float()
    captions = [f"c{rng.integers(0, 70)}" for _ in range(90)]  # many repeated strings
    for i, c in enumerate(captions):  # equal strings get equal embeddings, as from a model
        text_embeds[i] = text_embeds[captions.index(c)]
    full = retrieval.retrieval_ranks(image_embeds, text_embeds, text_image, captions, chunk_size=10_000)
    for chunk in (1, 7, 16):
        part = retrieval.retrieval_ranks(image_embeds, text_embeds, text_image, captions, chunk_size=chunk)
        assert np.array_equal(full[0], part[0]) and np.array_equal(full[1], part[1])
    # and the rank equals the position in a stable sort, computed directly
    distinct = {c: i for i, c in reversed(list(enumerate(captions)))}
    order = sorted(distinct, key=distinct.get)
    g = F.normalize(text_embeds[[distinct[c] for c in order]].double(), dim=-1)
    q = F.normalize(image_embeds.double(), dim=-1)
    ranked = torch.sort((q @ g.T).float(), dim=1, descending=True, stable=True).indices
    for i in range(50):
        mine = {order.index(c) for c, t in zip(captions, text_image) if t == i}
        position = next(p for p, j in enumerate(ranked[i].tolist()) if j in mine)
        assert full[0][i] == position + 1


def test_recall_curve_and_errors():
    assert retrieval.recall_curve(np.array([1, 2, 2, 7]), 3) == [0.25, 0.75, 0.75]
    with pytest.raises(ValueError, match="no caption"):
        retrieval.retrieval_ranks(R_IMAGES, R_TEXTS[:2], [0, 0])
    with pytest.raises(ValueError, match="index the 3 images"):
        retrieval.retrieval_ranks(R_IMAGES, R_TEXTS, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="dimensions"):
        retrieval.retrieval_ranks(R_IMAGES, torch.zeros(4, 3), R_TEXT_IMAGE)


def test_retrieval_flatten_and_embed_model_embed_each_text_once():
    texts, text_image = retrieval.flatten_captions([["x", "y"], "z", ["x"]])
    assert texts == ["x", "y", "z", "x"] and text_image == [0, 0, 1, 2]

    class Fake(nn.Module):
        seen = []

        def encode_image(self, x, normalize=False):
            return x.flatten(1)

        def encode_text(self, tokens, normalize=False):
            self.seen.append(tokens.shape[0])
            return tokens.float()

    table = {"x": [1.0, 0.0], "y": [0.7, 0.7], "z": [0.0, 1.0]}
    tokenize = lambda ts: torch.tensor([table[t] for t in ts])  # noqa: E731
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])[:, None, None, :]
    [result] = retrieval.evaluate(*in_memory(Fake(), tokenize, (images, None, [["x", "y"], ["z"], ["x"]])))
    metrics = result.metrics
    assert Fake.seen == [3]  # x, y, z: the second "x" is not embedded again
    # image 0 (1,0) -> x; image 1 (0,1) -> z (y is .707); image 2 (1,.1) -> x: all rank 1
    assert metrics["text_retrieval_recall@1"] == 1.0


# ----------------------------------------------------------------------------- kNN
# training bank: t0 (1,0) class 0, t1 (.8,.6) class 1, t2 (0,1) class 1, t3 (-1,0) class 2,
# t4 (1,0) class 1 -- t4 ties t0 exactly.
KNN_TRAIN = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0]])
KNN_LABELS = torch.tensor([0, 1, 1, 2, 1])


def test_knn_votes_by_hand():
    q = torch.tensor([[1.0, 0.0]])
    # k=3, T=0.5: neighbours t0, t4 (cos 1) and t1 (cos .8): class 0 e^2, class 1 e^2 + e^1.6
    scores = knn.vote_scores(KNN_TRAIN, KNN_LABELS, q, k=3, temperature=0.5, num_classes=3)
    torch.testing.assert_close(scores, torch.tensor([[math.exp(2), math.exp(2) + math.exp(1.6), 0.0]],
                                                    dtype=torch.float64))
    # k=1: t0 and t4 tie; the lower index (t0, class 0) wins. (t4 would give class 1.)
    scores = knn.vote_scores(KNN_TRAIN, KNN_LABELS, q, k=1, temperature=0.5, num_classes=3)
    torch.testing.assert_close(scores, torch.tensor([[math.exp(2), 0.0, 0.0]], dtype=torch.float64))


def test_knn_metrics_with_a_class_missing_from_training():
    # q0 (1,0) label 0 -> t0 (tie with t4, lower index) -> 0, hit
    # q1 (0,1) label 1 -> t2 -> 1, hit
    # q2 (-1,0) label 3 (no training samples) -> t3 -> 2, miss; class 3 can never be predicted
    # q3 (.6,.8) label 1: cos t1 .96, t2 .8, t0 .6 -> t1 -> 1, hit
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]])
    metrics = knn.evaluate_features(KNN_TRAIN, KNN_LABELS, queries, [0, 1, 3, 1], k=1, temperature=0.07,
                           topk=(1, 2))
    assert metrics["acc1"] == pytest.approx(3 / 4)
    # recall: class 0 1/1, class 1 2/2, class 3 0/1 -> 2/3 (class 2 has no test samples)
    assert metrics["mean_per_class_recall"] == pytest.approx(2 / 3)
    # top-2 of q2: class 2 voted, then the 0-score tie 0, 1, 3 -> class 0: still a miss
    assert metrics["acc2"] == pytest.approx(3 / 4)


def test_knn_nearest_equals_stable_sort_and_chunking():
    torch.manual_seed(0)
    for _ in range(50):
        sims = torch.randint(0, 4, (6, 25)).float()  # many ties
        for k in (1, 3, 8, 25, 40):
            assert torch.equal(knn.nearest(sims, k), stable_topk(sims, k).sort(dim=1).values)
    train = torch.randn(300, 16)
    train[100:110] = train[0]  # duplicates: ties between bank entries
    labels = torch.randint(0, 7, (300,))
    test = torch.cat([torch.randn(97, 16), train[:3]])
    full = knn.vote_scores(train, labels, test, k=20, chunk_size=1000)
    for chunk in (1, 13, 64):
        assert torch.equal(knn.vote_scores(train, labels, test, k=20, chunk_size=chunk), full)


def test_knn_errors():
    with pytest.raises(ValueError, match="dimensions"):
        knn.evaluate_features(KNN_TRAIN, KNN_LABELS, torch.zeros(2, 3), [0, 1])
    with pytest.raises(ValueError, match="k must be"):
        knn.evaluate_features(KNN_TRAIN, KNN_LABELS, KNN_TRAIN, KNN_LABELS, k=0)
    with pytest.raises(ValueError, match="NaN"):
        knn.evaluate_features(KNN_TRAIN, KNN_LABELS, torch.full((1, 2), float("nan")), [0])


# ----------------------------------------------------------------------------- collapse
def test_collapse_by_hand():
    ln3 = math.log(3)
    image = torch.tensor([[0.0, 0.0], [ln3, 0.0]])  # p = (.5, .5), (.75, .25); argmax 0 (tie), 0
    text = torch.tensor([[0.0, ln3], [0.0, 0.0]])  # p = (.25, .75), (.5, .5); argmax 1, 0 (tie)
    m = collapse.prototype_stats(image, text, temperature=1.0).metrics()
    h = lambda *p: -sum(x * math.log(x) for x in p if x > 0)  # noqa: E731
    ln2 = math.log(2)
    assert m["image_usage_entropy_ratio"] == pytest.approx(h(0.625, 0.375) / ln2)  # mean p
    assert m["image_sample_entropy_ratio"] == pytest.approx((h(.5, .5) + h(.75, .25)) / 2 / ln2)
    assert m["image_mean_max_prob"] == pytest.approx((0.5 + 0.75) / 2)
    assert m["image_distinct_prototypes"] == 1 and m["image_argmax_entropy_ratio"] == 0.0
    assert m["text_distinct_prototypes"] == 2 and m["text_argmax_entropy_ratio"] == pytest.approx(1.0)
    assert m["text_usage_entropy_ratio"] == pytest.approx(h(0.375, 0.625) / ln2)
    assert m["argmax_agreement"] == 0.5  # pair 0: 0 vs 1; pair 1: 0 vs 0
    assert m["num_prototypes"] == 2 and m["temperature"] == 1.0

    # the two collapses: uniform outputs (per-sample entropy 1) and one prototype for all (usage 0)
    uniform = collapse.prototype_stats(torch.zeros(5, 8), torch.zeros(5, 8)).metrics()
    assert uniform["image_sample_entropy_ratio"] == pytest.approx(1.0)
    assert uniform["image_usage_entropy_ratio"] == pytest.approx(1.0)
    one = torch.zeros(5, 8)
    one[:, 3] = 1.0
    single = collapse.prototype_stats(one, one, temperature=0.001).metrics()
    assert single["image_usage_entropy_ratio"] == pytest.approx(0.0, abs=1e-9)
    assert single["image_distinct_prototypes"] == 1 and single["argmax_agreement"] == 1.0


def test_collapse_chunked_equals_unchunked_and_usage():
    torch.manual_seed(0)
    image, text = torch.randn(50, 16), torch.randn(50, 16)
    full = collapse.prototype_stats(image, text, temperature=0.1, chunk_size=1000).metrics()
    for chunk in (1, 7):
        part = collapse.prototype_stats(image, text, temperature=0.1, chunk_size=chunk).metrics()
        assert part.keys() == full.keys()
        for k in full:
            assert part[k] == pytest.approx(full[k], rel=1e-12)
    stats = collapse.PrototypeStats(16, 0.1)
    stats.update(image, text)
    usage = stats.usage()
    assert sum(usage["image_argmax_counts"]) == 50
    assert usage["image_argmax_counts"] == torch.bincount(image.argmax(1), minlength=16).tolist()
    with pytest.raises(ValueError, match="expected 16 prototypes"):
        stats.update(torch.zeros(2, 4), torch.zeros(2, 4))


# ----------------------------------------------------------------------------- text
WORDS = {"a": [1.0, 0.0], "b": [1.0, 0.0], "c": [0.0, 1.0], "d": [1.0, 1.0]}


class WordModel(nn.Module):
    """encode_text returns the table row of each word (one token per text)."""

    def encode_text(self, tokens, normalize=False):
        out = torch.tensor([list(WORDS.values())[int(t)] for t in tokens[:, 0]])
        return F.normalize(out, dim=-1) if normalize else out


def word_tokenize(texts):
    return torch.tensor([[list(WORDS).index(t)] for t in texts])


def test_wordsim_spearman_of_known_similarities():
    # cosines: (a,b) 1, (a,d) .707, (c,d) .707, (a,c) 0 -> ranks 4, 2.5, 2.5, 1
    # human:    9,       5,         6,         1      -> ranks 4, 2,   3,   1
    # Pearson of the ranks: cov 4.5, var 4.5 and 5 -> rho = 4.5 / sqrt(22.5) = sqrt(0.9)
    pairs = [("a", "b", 9.0), ("a", "d", 5.0), ("c", "d", 6.0), ("a", "c", 1.0)]
    m = text.wordsim_spearman(WordModel(), word_tokenize, pairs)
    assert m["wordsim_spearman"] == pytest.approx(math.sqrt(0.9))
    assert m["wordsim_pairs"] == 4


def test_read_word_pairs(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("# header\n# Word 1\tWord 2\tHuman\nlove\tsex\t6.77\n\ntiger\tcat\t7.35\na\tb\t1\n")
    assert text.read_word_pairs(path) == [("love", "sex", 6.77), ("tiger", "cat", 7.35), ("a", "b", 1.0)]
    path.write_text("love\tsex\t6.77\ntiger cat 7.35\n")
    with pytest.raises(EvalError, match=r"pairs.tsv:2: expected word<TAB>word<TAB>score"):
        text.read_word_pairs(path)
    with pytest.raises(EvalError, match="cannot read"):
        text.read_word_pairs(tmp_path / "missing.tsv")


def test_wordsim353_from_the_gensim_wheel():
    pytest.importorskip("gensim.test", reason="gensim (lipkit[eval]) is not installed")
    pairs = text.read_word_pairs(text.wordsim353_path())
    assert len(pairs) == 353
    assert pairs[0] == ("love", "sex", 6.77)


def test_caption_probe_on_text_embeddings():
    captions = ["a", "b", "c", "d"]
    m = text.caption_probe(WordModel(), word_tokenize, captions * 3, [0, 0, 1, 1] * 3,
                           ["b", "c"], [0, 1], C_grid=[1.0])
    # a, b embed to (1,0): class 0; c to (0,1), d to (1,1)/sqrt2: class 1 -> separable
    assert m == {"caption_probe_acc1": 1.0, "caption_probe_mean_per_class_recall": 1.0,
                 "caption_probe_best_C": 1.0}


# ----------------------------------------------------------------------------- OOD
def test_corrupt_pads_to_32_and_crops_back_by_hand():
    pytest.importorskip("imagecorruptions", reason="imagecorruptions-imaug (lipkit[eval]) missing")
    white = np.full((2, 28, 28), 255, dtype=np.uint8)
    out = ood.corrupt(white, "contrast", 1)
    # padded to 32x32 with zeros: mean 784/1024 = .765625; contrast c = .4:
    # (1 - .765625) * .4 + .765625 = .859375 -> 219.14, truncated to 219 by the library
    assert out.shape == (2, 28, 28) and out.dtype == np.uint8
    assert (out == 219).all()
    big = np.full((1, 40, 40), 255, dtype=np.uint8)  # >= 32: not padded, mean 1 -> unchanged
    assert (ood.corrupt(big, "contrast", 1) == 255).all()
    rgb = np.full((1, 28, 28, 3), 255, dtype=np.uint8)
    assert ood.corrupt(rgb, "contrast", 1).shape == (1, 28, 28, 3)


def test_corrupt_is_reproducible_and_independent_of_batching():
    pytest.importorskip("imagecorruptions", reason="imagecorruptions-imaug (lipkit[eval]) missing")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    state = np.random.get_state()[1].copy()
    a = ood.corrupt(images, "gaussian_noise", 3, seed=1)
    assert np.array_equal(np.random.get_state()[1], state)  # global RNG restored
    assert np.array_equal(a, ood.corrupt(images, "gaussian_noise", 3, seed=1))
    assert np.array_equal(a[2:], ood.corrupt(images[2:], "gaussian_noise", 3, seed=1, first_index=2))
    assert not np.array_equal(a, ood.corrupt(images, "gaussian_noise", 3, seed=2))
    with pytest.raises(EvalError, match="unknown corruption.*gaussian_nois\\b"):
        ood.corrupt(images, "gaussian_nois", 1)
    with pytest.raises(EvalError, match="severities must be integers 1-5"):
        ood.corrupt(images, "contrast", 6)


class VectorModel(nn.Module):
    """Images are [N, 1, 1, D] vectors; prompts "<class>|<template>" embed to e_class."""

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes

    def encode_image(self, images, normalize=False):
        x = images.flatten(1).float()
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, tokens, normalize=False):
        return F.one_hot(tokens[:, 0], self.num_classes).float()


def vec_tokenize(texts):
    return torch.tensor([[int(t.split("|")[0])] for t in texts])


def vectors(rows):
    return torch.tensor(rows, dtype=torch.float32)[:, None, None, :]


def test_ood_drop_by_hand():
    model, names = VectorModel(2), ["0", "1"]
    labels = [0, 0, 1, 1]
    clean = (vectors([[2, 1], [3, 0], [0, 1], [1, 2]]), labels)  # all correct: 1.0
    shifted = {
        "half": (vectors([[2, 1], [1, 3], [0, 1], [2, 1]]), labels),  # 2/4
        "quarter": (vectors([[1, 2], [1, 3], [0, 1], [2, 1]]), labels),  # 1/4
    }
    m = ood.shift_metrics(model, vec_tokenize, clean, shifted, names, ["{c}|0"])
    assert m["zeroshot_clean_acc1"] == 1.0
    assert m["zeroshot_half_acc1"] == 0.5 and m["zeroshot_quarter_acc1"] == 0.25
    assert m["zeroshot_shifted_acc1"] == pytest.approx(0.375)
    assert m["zeroshot_drop"] == pytest.approx(0.625)
    assert m["zeroshot_relative_drop"] == pytest.approx(0.625)
    assert not any(k.startswith("linear") for k in m)

    # a probe fitted on the clean features scores the same sets
    x = np.array([[2, 1], [3, 0], [0, 1], [1, 2], [4, 1], [1, 4]], dtype=float)
    probe = linear.fit(x, [0, 0, 1, 1, 0, 1], C_grid=[100.0])
    both = ood.shift_metrics(model, vec_tokenize, clean, shifted, names, ["{c}|0"], probe=probe)
    assert both["linear_clean_acc1"] == 1.0
    assert both["linear_half_acc1"] == probe.evaluate(shifted["half"][0].flatten(1), labels)["acc1"]
    probe_only = ood.shift_metrics(model, vec_tokenize, clean, shifted, probe=probe)
    assert set(probe_only) == {k for k in both if k.startswith("linear")}


# ----------------------------------------------------------------------------- few-shot probe
def test_few_shot_indices_and_probe():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 6)
    idx = linear.few_shot_indices(labels, 4, seed=0)
    assert np.bincount(labels[idx]).tolist() == [4, 3, 4]  # class 1 has only 3
    assert np.array_equal(idx, np.sort(idx))
    assert np.array_equal(idx, linear.few_shot_indices(labels, 4, seed=0))
    with pytest.raises(ValueError, match="few-shot k"):
        linear.few_shot_indices(labels, 0)

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(30, 4)) + 6 * np.eye(4)[c] for c in range(3)])
    y = np.repeat(np.arange(3), 30)
    # k = 2: one sample per class to fit, one to validate (at least one goes to validation)
    m = linear.evaluate_features(x, y, x, y, few_shot_k=2)
    assert m["acc1"] > 0.9
    probe = linear.fit(x, y, few_shot_k=2)
    assert probe.pipeline[-1].coef_.shape == (3, 4)


def test_model_level_knn_and_collapse_match_the_tensor_level():
    torch.manual_seed(0)
    model = VectorModel(3)
    train_x, test_x = torch.randn(40, 1, 1, 6), torch.randn(10, 1, 1, 6)
    train_y, test_y = torch.randint(0, 3, (40,)), torch.randint(0, 3, (10,))
    direct = knn.evaluate_features(train_x.flatten(1), train_y, test_x.flatten(1), test_y, k=5)
    em, data = in_memory(model, vec_tokenize, (test_x, test_y), train=(train_x, train_y))
    # the record also says which neighbours and features it used, and how many images it scored;
    # with 3 classes every label is in the top 5, so acc5 is left out
    assert knn.evaluate(em, data, batch_size=7, knn_k=5)[0].metrics == \
        {k: v for k, v in direct.items() if k != "acc5"} | {"k": 5, "temperature": 0.07, "features": "post", "images": 10}

    proto = torch.randn(6, 8)
    image_fn = lambda x: x.flatten(1) @ proto  # noqa: E731
    text_fn = lambda t: F.one_hot(t[:, 0], 8).float()  # noqa: E731
    captions = [str(i % 3) for i in range(10)]
    em, data = in_memory(model, vec_tokenize, (test_x, None, [[c] for c in captions]),
                         image_features=lambda x: x.flatten(1), image_prototype_head=lambda f: f @ proto,
                         text_prototypes=text_fn, num_prototypes=8)
    [result] = collapse.evaluate(em, data, batch_size=4)
    metrics, usage = result.metrics, result.details
    tokens = vec_tokenize(captions)
    assert metrics == pytest.approx(collapse.prototype_stats(image_fn(test_x), text_fn(tokens)).metrics() | {"images": 10})
    assert usage["text_argmax_counts"] == [4, 3, 3, 0, 0, 0, 0, 0]


def test_collapse_information_and_nmi_by_hand():
    """Mutual information I = H(p_bar) - mean H(p_i) over log min(K, C), and NMI(argmax, class)."""
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    ln3 = math.log(3)
    # a collapsed constant output, one-hot or soft: I = 0 whatever its shape, NMI = 0
    for row in ([9.0, 0.0, 0.0, 0.0], [0.3, 0.2, 0.1, 0.0]):
        const = torch.tensor([row] * 6)
        m = collapse.prototype_stats(const, const, temperature=1.0, labels=labels, num_classes=3).metrics()
        assert m["image_mutual_information_ratio"] == pytest.approx(0.0, abs=1e-12)
        assert m["image_label_nmi"] == 0.0 and m["image_distinct_prototypes"] == 1
    # uniform outputs: I = 0 (H(p_bar) = mean H(p) = log K), though H(p_bar)/log K = 1
    m = collapse.prototype_stats(torch.zeros(6, 4), torch.zeros(6, 4), labels=labels).metrics()
    assert m["image_mutual_information_ratio"] == pytest.approx(0.0, abs=1e-12)
    assert m["image_usage_entropy_ratio"] == pytest.approx(1.0)
    # a perfect, confident clustering of 3 classes on 3 of K = 4 prototypes: I = log 3 = log min(K, C)
    hot = torch.full((6, 4), -1e4)
    hot[torch.arange(6), labels] = 0.0
    m = collapse.prototype_stats(hot, hot, temperature=1.0, labels=labels, num_classes=3).metrics()
    assert m["image_mutual_information_ratio"] == pytest.approx(1.0, rel=1e-9)
    assert m["image_label_nmi"] == pytest.approx(1.0) and m["argmax_agreement"] == 1.0
    # the same clustering with the prototypes renumbered: equal NMI and I
    permuted = hot[:, [2, 3, 0, 1]]
    p = collapse.prototype_stats(permuted, hot, temperature=1.0, labels=labels, num_classes=3).metrics()
    assert p["image_label_nmi"] == pytest.approx(1.0) and p["argmax_agreement"] == 0.0
    assert p["image_mutual_information_ratio"] == pytest.approx(1.0, rel=1e-9)
    # two classes merged on one prototype: argmax (0, 0, 0, 0, 1, 1) vs classes (0, 0, 1, 1, 2, 2)
    merged = hot.clone()
    merged[2:4] = hot[0]
    m = collapse.prototype_stats(merged, merged, temperature=1.0, labels=labels, num_classes=3).metrics()
    h_u, h_v, mi = collapse_h(4 / 6, 2 / 6), ln3, ln3 - (4 / 6) * math.log(2)
    assert m["image_label_nmi"] == pytest.approx(mi / ((h_u + h_v) / 2), rel=1e-9)
    assert m["image_mutual_information_ratio"] == pytest.approx(h_u / ln3, rel=1e-9)
    from sklearn.metrics import normalized_mutual_info_score
    assert m["image_label_nmi"] == pytest.approx(normalized_mutual_info_score(labels, [0, 0, 0, 0, 1, 1]))
    # without labels: no NMI, I over log K
    m = collapse.prototype_stats(hot, hot, temperature=1.0).metrics()
    assert "image_label_nmi" not in m and m["image_mutual_information_ratio"] == pytest.approx(ln3 / math.log(4))


def collapse_h(*p):
    return -sum(x * math.log(x) for x in p if x > 0)


def test_collapse_nmi_streams_over_chunks_like_sklearn():
    from sklearn.metrics import normalized_mutual_info_score
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 5, (300,), generator=g)
    logits = torch.randn(300, 12, generator=g) + 3 * torch.nn.functional.one_hot(labels * 2, 12)
    m = collapse.prototype_stats(logits, logits.flip(1), labels=labels, num_classes=5, chunk_size=7).metrics()
    assert m["image_label_nmi"] == pytest.approx(normalized_mutual_info_score(labels, logits.argmax(1)), rel=1e-9)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        collapse.prototype_stats(logits, logits, labels=labels + 1, num_classes=5).metrics()
