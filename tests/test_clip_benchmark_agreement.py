"""`lipkit eval` gives CLIP_benchmark's numbers (LAION-AI/CLIP_benchmark 1.6.2, the field's
yardstick) on the same model and the same data: a lipkit run exported to open_clip, Fashion-MNIST
images and captions written by CLIP_benchmark's own `convert_dataset` / `convert_retrieval_dataset`,
its `zeroshot_classification`, `zeroshot_retrieval` and `linear_probe` run as its command line runs
them (tests/_clip_benchmark.py), `lipkit eval open_clip:local-dir:MODEL` on the same folders.

Zero-shot and retrieval agree to the image; the linear probe with `eval.linear_solver=adamw`
(CLIP_benchmark's solver) agrees to the image when both start from the same random-number state
(CLIP_benchmark's features cached, the generator seeded before its probe: its command line draws
the training-row permutation after loading the model). clip-benchmark lives in .venv-peer only
(`make peer`); elsewhere this module is skipped."""
import os

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
pytest.importorskip("clip_benchmark", reason="clip-benchmark is installed in .venv-peer only (`make peer`)")
try:
    from lipkit.interop.gateway import OpenClipUnavailable, import_open_clip

    import_open_clip()
except OpenClipUnavailable:
    pytest.skip("open_clip is not importable here: this test runs under .venv-peer", allow_module_level=True)

import torch
from PIL import Image

from _clip_benchmark import RECALL_K, SEED, ClipBenchmark, lipkit_eval, write_classification, write_retrieval
from _interop_data import tiny_run
from lipkit.data import fashion_mnist_prompts, load_fashion_mnist
from lipkit.eval.adapter import load_model_spec
from lipkit.eval.context import Context
from lipkit.eval.datasets import open_dataset
from lipkit.interop.export import export_run

N_TRAIN, N_TEST, N_CAPTIONED = 300, 200, 150


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(open_clip folder, classification dataset, retrieval dataset) and CLIP_benchmark on it."""
    root = tmp_path_factory.mktemp("clip_benchmark")
    tiny_run(root / "run")
    export_run(root / "run", "open_clip", root / "model")
    prompts = fashion_mnist_prompts()
    names, templates = prompts.class_names, [t.replace("{}", "{c}") for t in prompts.templates[:4]]
    train_images, train_labels = load_fashion_mnist("train")
    test_images, test_labels = load_fashion_mnist("test")

    def pairs(images, labels, n):
        return [(Image.fromarray(images[i]), int(labels[i])) for i in range(n)]

    classes = write_classification(root / "fashion", {"train": pairs(train_images, train_labels, N_TRAIN),
                                                      "test": pairs(test_images, test_labels, N_TEST)},
                                   names, templates)
    # two distinct captions an image (CLIP_benchmark ranks equal caption texts as separate items)
    captioned = [(Image.fromarray(test_images[i]), [f"a photo of a {names[test_labels[i]]}, number {i}",
                                                   f"picture {i}: {names[test_labels[i]]}"])
                 for i in range(N_TEST, N_TEST + N_CAPTIONED)]
    captions = write_retrieval(root / "fashion_captions", captioned)
    return root, classes, captions, ClipBenchmark(root / "model")


@pytest.fixture(scope="module")
def lipkit_records(setup):
    root, classes, captions, _ = setup
    records = lipkit_eval(root / "model", [classes, captions], "zeroshot,retrieval,linear", root / "lipkit.json")
    return {(r["dataset"], r["task"]): r["metrics"] for r in records}


def in_items(value: float, n: int) -> int:
    """A share of n items as a count (CLIP_benchmark's are float32)."""
    count = value * n
    assert abs(count - round(count)) < 1e-3, (value, n)
    return round(count)


def test_zero_shot_classification_is_clip_benchmarks(setup, lipkit_records):
    _, classes, _, cb = setup
    theirs = cb.zeroshot_classification(classes)
    ours = lipkit_records[("wds/fashion", "zeroshot_classification")]
    assert ours["images"] == N_TEST and ours["test_split"] == "test"
    for key in ("acc1", "acc5"):
        assert in_items(ours[key], N_TEST) == in_items(theirs[key], N_TEST), key
    assert ours["mean_per_class_recall"] == pytest.approx(theirs["mean_per_class_recall"], abs=1e-12)
    assert 0 < ours["acc1"] < ours["acc5"] < 1  # numbers that could have come out otherwise


def test_retrieval_is_clip_benchmarks(setup, lipkit_records):
    _, _, captions, cb = setup
    theirs = cb.zeroshot_retrieval(captions)
    ours = lipkit_records[("wds/fashion_captions", "zeroshot_retrieval")]
    assert (ours["images"], ours["texts"], ours["distinct_texts"]) == (N_CAPTIONED, 2 * N_CAPTIONED, 2 * N_CAPTIONED)
    for k in RECALL_K:  # text -> image: a query per caption; image -> text: a query per image
        key = f"image_retrieval_recall@{k}"
        assert in_items(ours[key], 2 * N_CAPTIONED) == in_items(theirs[key], 2 * N_CAPTIONED), key
        key = f"text_retrieval_recall@{k}"
        assert in_items(ours[key], N_CAPTIONED) == in_items(theirs[key], N_CAPTIONED), key
    assert ours["text_retrieval_recall@10"] > ours["text_retrieval_recall@1"]


def test_the_adamw_probe_is_clip_benchmarks_linear_probe(setup, tmp_path):
    root, classes, _, cb = setup
    cb.linear_probe(classes, tmp_path / "features")  # its features, cached as its command line caches them
    torch.manual_seed(SEED)  # ... and the generator as lipkit's probe starts it
    theirs = cb.linear_probe(classes, tmp_path / "features")
    # the two probes read the same features, rows in the same order (to float rounding)
    em = load_model_spec(f"open_clip:local-dir:{root / 'model'}", ["eval.num_workers=0", "eval.batch_size=64"])
    ctx = Context(em, open_dataset(str(classes), em.eval), progress=False)
    for split in ("train", "test"):
        cached = torch.load(tmp_path / "features" / "fashion" / f"features_{split}.pt")
        assert torch.allclose(ctx.features(split), cached, atol=1e-6), split
        labels = torch.load(tmp_path / "features" / "fashion" / f"targets_{split}.pt")
        assert np.array_equal(labels.numpy(), getattr(ctx.data, split).labels), split

    [record] = lipkit_eval(root / "model", [classes], "linear", tmp_path / "lipkit.json",
                           settings=("eval.linear_solver=adamw",))
    ours = record["metrics"]
    assert ours["solver"] == "adamw" and ours["train_samples"] == N_TRAIN and ours["images"] == N_TEST
    assert (ours["lr"], ours["epochs"], ours["weight_decay"]) == (0.1, theirs["epochs"], theirs["weight_decay"])
    for key in ("acc1", "acc5"):
        assert in_items(ours[key], N_TEST) == in_items(theirs[f"lp_{key}"], N_TEST), key
    assert ours["mean_per_class_recall"] == pytest.approx(theirs["lp_mean_per_class_recall"], abs=1e-12)


def test_lipkits_own_probe_is_another_solver_on_the_same_images(lipkit_records):
    """The default probe (lbfgs on standardised features, C chosen on a validation split) is not
    CLIP_benchmark's solver, so its number is its own; it reads the same splits."""
    ours = lipkit_records[("wds/fashion", "linear_probe")]
    assert "best_C" in ours and "solver" not in ours
    assert (ours["train_samples"], ours["images"], ours["probe_train"]) == (N_TRAIN, N_TEST, "train")
