"""`lipkit eval` end to end: a trained run on all tasks, outputs in CLIP_benchmark's schema, an
open_clip-style stand-in model, the lipkit hooks, prompts files and one-line errors."""
import json
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from _eval_data import in_memory
from _eval_runs import HAVE_EVAL_EXTRA, evaluated_runs
from lipkit.runs.loading import load_run
from lipkit.cli import main
from lipkit.config import ModelConfig, PrototypeHeadConfig
from lipkit.data import load_fashion_mnist
from lipkit.data.fashion_mnist import normalize
from lipkit.eval import knn, linear, zeroshot
from lipkit.eval.errors import EvalError
from lipkit.eval.features import embed_images
from lipkit.eval.adapter import from_lipkit_run, load_model_spec
from lipkit.eval.results import RECORD_KEYS
from lipkit.eval.registry import parse_tasks
from lipkit.eval.runner import evaluate_model
from lipkit.eval.datasets import load_prompts
from lipkit.models import LIPModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def xclip_run():
    return evaluated_runs()["xclip"]


def by_task(records):
    return {(r["dataset"], r["task"]): r["metrics"] for r in records}


def test_all_tasks_write_clip_benchmark_records(xclip_run):
    records = json.loads((xclip_run / "results.json").read_text())
    assert all(list(r) == list(RECORD_KEYS) for r in records)
    assert {r["model"] for r in records} == {"xclip"} and {r["pretrained"] for r in records} == {str(xclip_run)}
    tasks = set(by_task(records))
    expected = {("fashion-mnist", "zeroshot_classification"), ("fashion-mnist", "linear_probe"),
                ("fashion-mnist", "zeroshot_retrieval"), ("fashion-mnist", "knn_classification"),
                ("fashion-mnist", "prototype_collapse")}
    if HAVE_EVAL_EXTRA:
        expected |= {("fashion-mnist-c", "ood_classification"), ("wordsim353", "word_similarity"),
                     ("fashion-mnist", "caption_probe")}
    assert tasks == expected

    # one file per (model, dataset, task) in --out-dir, each the same single record
    folder = xclip_run.parent / "xclip-records"
    files = sorted(p for p in folder.glob("*.json") if p.name != "details.json")
    assert len(files) == len(records)
    assert sorted((json.loads(p.read_text()) for p in files), key=lambda r: (r["dataset"], r["task"])) == \
        sorted(records, key=lambda r: (r["dataset"], r["task"]))
    assert (folder / "xclip__fashion-mnist__linear_probe.json").is_file()

    details = json.loads((xclip_run / "results.details.json").read_text())
    curve = details["fashion-mnist/zeroshot_retrieval"]["text_retrieval_recall_curve"]
    m = by_task(records)
    assert len(curve) == 50 and curve[0] == pytest.approx(m[("fashion-mnist", "zeroshot_retrieval")]["text_retrieval_recall@1"])
    counts = details["fashion-mnist/prototype_collapse"]["image_argmax_counts"]
    assert len(counts) == 64 and sum(counts) == 300
    assert m[("fashion-mnist", "prototype_collapse")]["image_distinct_prototypes"] == sum(c > 0 for c in counts)
    assert m[("fashion-mnist", "zeroshot_retrieval")]["images"] == 120


def test_runner_numbers_match_the_task_modules_called_directly(xclip_run):
    """The runner's shared tower pass and caches give what each module gives on its own."""
    m = by_task(json.loads((xclip_run / "results.json").read_text()))
    model, tokenizer, cfg = load_run(xclip_run)
    test_images, test_labels = load_fashion_mnist("test")
    images, labels = normalize(test_images[:300]), torch.tensor(test_labels[:300])
    from lipkit.data import fashion_mnist_prompts
    prompts = fashion_mnist_prompts()
    direct = zeroshot.evaluate(*in_memory(model, tokenizer, (images, labels), class_names=prompts.class_names,
                                          templates=prompts.templates))[0].metrics
    assert m[("fashion-mnist", "zeroshot_classification")] == pytest.approx(direct)

    train_images, train_labels = load_fashion_mnist("train")
    train_x = embed_images(model, normalize(train_images[:400]), 100, normalize=False, feature_fn=model.vision)
    test_x = embed_images(model, images, 100, normalize=False, feature_fn=model.vision)
    probe = linear.evaluate_features(train_x, train_labels[:400], test_x, labels, seed=cfg.train.seed)
    lin = m[("fashion-mnist", "linear_probe")]
    assert lin["acc1"] == pytest.approx(probe["acc1"]) and lin["best_C"] == probe["best_C"]
    assert lin["features"] == "pre" and lin["train_samples"] == 400
    near = knn.evaluate_features(train_x, train_labels[:400], test_x, labels)
    assert m[("fashion-mnist", "knn_classification")]["acc1"] == pytest.approx(near["acc1"])
    if HAVE_EVAL_EXTRA:  # clean OOD set == the test set here (ood_limit = test_limit = 300)
        ood = m[("fashion-mnist-c", "ood_classification")]
        assert ood["zeroshot_clean_acc1"] == pytest.approx(direct["acc1"])
        assert ood["linear_clean_acc1"] == pytest.approx(lin["acc1"])
        assert set(k for k in ood if k.endswith("_s5_acc1")) == {
            "zeroshot_gaussian_noise_s5_acc1", "zeroshot_contrast_s5_acc1",
            "linear_gaussian_noise_s5_acc1", "linear_contrast_s5_acc1"}
        assert ood["zeroshot_drop"] == pytest.approx(ood["zeroshot_clean_acc1"] - ood["zeroshot_shifted_acc1"])


@pytest.mark.parametrize("heads", [["clip", "prototypes"], ["prototypes"]])
def test_lipkit_hooks_reproduce_encode_image(heads, tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(heads=heads, prototypes=PrototypeHeadConfig(hidden_dim=64, bottleneck_dim=16,
                                                                  num_prototypes=32))
    model = LIPModel(cfg).eval()
    x = torch.randn(5, 1, 28, 28)
    head = model.image_projection if "clip" in heads else model.image_prototypes
    with torch.no_grad():
        torch.testing.assert_close(F.normalize(head(model.vision(x)), dim=-1),
                                   model.encode_image(x, normalize=True))


def test_eval_settings_come_from_the_run_and_set(xclip_run):
    em = from_lipkit_run(xclip_run, ["eval.knn_k=5", "eval.features=post"])
    assert em.eval.knn_k == 5 and em.eval.features == "post" and em.eval.ood_limit == 1000
    assert em.num_prototypes == 64 and em.prototype_temperature == pytest.approx(0.1)
    x = np.zeros((2, 28, 28), dtype=np.uint8)
    torch.testing.assert_close(em.images(x), normalize(x))  # the exact training normalisation
    pil = em.images([Image.fromarray(np.full((56, 40, 3), 255, np.uint8))])
    assert pil.shape == (1, 1, 28, 28)


# ----------------------------------------------------------------------------- open_clip stand-in
class StandIn(nn.Module):
    """What open_clip hands back: encode_image / encode_text on its own preprocessed inputs."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.image_proj = nn.Parameter(torch.randn(3 * 8 * 8, 16, generator=g))
        self.text_table = nn.Parameter(torch.randn(256, 16, generator=g))

    def encode_image(self, images, normalize=False):
        x = images.flatten(1) @ self.image_proj
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, tokens, normalize=False):
        x = self.text_table[tokens].mean(dim=1)
        return F.normalize(x, dim=-1) if normalize else x


def fake_open_clip(calls):
    def preprocess(im):
        calls.append(("preprocess", im.mode, im.size))
        return torch.from_numpy(np.asarray(im.resize((8, 8)), dtype=np.float32) / 255).permute(2, 0, 1)

    def tokenize(texts):
        calls.append(("tokenize", type(texts).__name__, len(texts)))
        return torch.tensor([[b for b in t.encode()[:12].ljust(12, b" ")] for t in texts])

    def create_model_and_transforms(arch, pretrained=None):
        calls.append(("create", arch, pretrained))
        if arch != "ViT-Fake":
            raise RuntimeError(f"Model config for {arch} not found.")
        return StandIn(), preprocess, preprocess

    module = types.ModuleType("open_clip")
    module.create_model_and_transforms = create_model_and_transforms
    module.get_tokenizer = lambda arch: tokenize
    return module


def test_open_clip_spec_with_a_stand_in(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setitem(sys.modules, "open_clip", fake_open_clip(calls))
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("cat\tdog\t7\ncat\tcar\t2\nsun\tmoon\t6\ncar\tbus\t8\n")
    em = load_model_spec("open_clip:ViT-Fake:made-up-tag",
                         ["eval.test_limit=60", "eval.linear_train_limit=80", "eval.retrieval_limit=30",
                          f"eval.wordsim_path={pairs}", "eval.batch_size=32"])
    assert ("create", "ViT-Fake", "made-up-tag") in calls
    assert em.image_features is None and em.image_prototype_head is None
    tasks = ["zeroshot", "linear", "retrieval", "knn", "collapse"] + (["text"] if HAVE_EVAL_EXTRA else [])
    out = evaluate_model(em, tasks, progress=False)
    m = by_task(out.records)
    assert {r["model"] for r in out.records} == {"ViT-Fake"}
    assert {r["pretrained"] for r in out.records} == {"made-up-tag"}
    assert ("fashion-mnist", "prototype_collapse") not in m  # no prototype heads: skipped
    assert m[("fashion-mnist", "linear_probe")]["features"] == "post"  # no tower hook
    assert 0 <= m[("fashion-mnist", "zeroshot_classification")]["acc1"] <= 1
    # Fashion-MNIST reached the model as 28x28 RGB PIL images, texts as lists of strings
    modes = {c[1:] for c in calls if c[0] == "preprocess"}
    assert modes == {("RGB", (28, 28))}
    assert {c[1] for c in calls if c[0] == "tokenize"} == {"list"}
    if HAVE_EVAL_EXTRA:
        assert m[(pairs.stem, "word_similarity")]["wordsim_pairs"] == 4

    with pytest.raises(EvalError, match="open_clip:ViT-Nope: Model config for ViT-Nope not found"):
        load_model_spec("open_clip:ViT-Nope")


def test_open_clip_missing_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip -> ImportError
    assert main(["eval", "open_clip:ViT-B-32", "--tasks", "zeroshot"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lipkit: error: open_clip:ViT-B-32: open_clip cannot be imported")
    assert "\n" not in err


@pytest.mark.parametrize("args, message", [
    (["--tasks", "zeroshot,nope"], "--tasks: unknown task(s) nope; available: zeroshot, linear, ood"),
    (["--set", "train.steps=3"], "--set train.steps=3: lipkit eval only overrides eval.* settings"),
    (["--set", "eval.nope=1"], "unknown key 'eval.nope'"),
    (["--set", "eval.dataset=cifar"], "cifar: no such file or folder, and not a built-in dataset"),
])
def test_eval_cli_errors(xclip_run, capsys, args, message):
    assert main(["eval", str(xclip_run)] + args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_missing_run_dir(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nothing"), "--tasks", "zeroshot"]) == 2
    assert "not a lipkit run directory" in capsys.readouterr().err


def test_parse_tasks():
    assert parse_tasks("knn, zeroshot,knn") == ["knn", "zeroshot"]
    with pytest.raises(EvalError, match="none given"):
        parse_tasks(" , ")


# ----------------------------------------------------------------------------- prompts files
def test_prompts_file_replaces_class_names_and_templates(xclip_run, tmp_path):
    path = tmp_path / "prompts.json"
    names = ["tee", "trousers", "jumper", "dress", "coat", "sandal", "shirt", "trainer", "bag", "boot"]
    path.write_text(json.dumps({"class_names": names, "templates": ["a {c}.", "my {}"]}))
    assert load_prompts(path) == (names, ["a {c}.", "my {}"])
    em = from_lipkit_run(xclip_run, [f"eval.prompts_path={path}", "eval.test_limit=50"])
    out = evaluate_model(em, ["zeroshot", "retrieval"], progress=False)
    assert by_task(out.records)[("fashion-mnist", "zeroshot_retrieval")]["distinct_texts"] <= 20

    path.write_text(json.dumps({"class_names": names[:3], "templates": ["a {}"]}))
    em = from_lipkit_run(xclip_run, [f"eval.prompts_path={path}"])
    with pytest.raises(EvalError, match="3 class names, but fashion-mnist has 10 classes"):
        evaluate_model(em, ["zeroshot"], progress=False)
    path.write_text(json.dumps({"class_names": names, "templates": ["no placeholder"]}))
    with pytest.raises(EvalError, match="placeholder"):
        load_prompts(path)
    path.write_text("{not json")
    with pytest.raises(EvalError, match="prompts.json: not a prompts file"):
        load_prompts(path)


def test_tuxpaint_retrieval_and_style_shift(xclip_run):
    from lipkit.data import DataSourceError
    from lipkit.data.tuxpaint import load_tuxpaint
    try:
        load_tuxpaint(fetch_if_missing=False)
    except DataSourceError:
        pytest.skip("Tux Paint stamps are not in the cache (lipkit data fetch tuxpaint)")
    tasks = ["retrieval", "zeroshot"] + (["ood"] if HAVE_EVAL_EXTRA else [])
    em = from_lipkit_run(xclip_run, ["eval.dataset=tuxpaint", "eval.ood_corruptions=[contrast]",
                                     "eval.ood_severities=[3]", "eval.ood_limit=20"])
    m = by_task(evaluate_model(em, tasks, progress=False).records)
    r = m[("tuxpaint", "zeroshot_retrieval")]
    assert r["images"] == 200 and r["distinct_texts"] < r["texts"]  # duplicate captions exist
    if HAVE_EVAL_EXTRA:
        style = m[("tuxpaint-style", "ood_classification")]
        assert style["cartoons"] > 0 and "zeroshot_cartoon_acc1" in style


def test_a_run_on_your_own_data(xclip_run, tmp_path):
    """A lipkit run (grey 28 px towers) on generated RGB images of another size: a labelled
    folder with captions and a captions-only table; collapse runs on both."""
    import dataclasses

    from _eval_data import pets, write_folder, write_jsonl
    data = pets()
    folder = write_folder(tmp_path / "pets", data)
    captions = write_jsonl(tmp_path / "captions.jsonl", data["test"], label_key="no_label")
    em = from_lipkit_run(xclip_run, ["eval.batch_size=4", "eval.num_workers=0"])
    em.eval = dataclasses.replace(em.eval, datasets=[str(folder), str(captions)])
    m = by_task(evaluate_model(em, ["zeroshot", "linear", "retrieval", "collapse"], progress=False).records)
    assert set(m) == {("pets", "zeroshot_classification"), ("pets", "linear_probe"),
                      ("pets", "zeroshot_retrieval"), ("pets", "prototype_collapse"),
                      ("captions", "zeroshot_retrieval"), ("captions", "prototype_collapse")}
    assert m[("pets", "linear_probe")]["features"] == "pre" and m[("pets", "linear_probe")]["train_samples"] == 12
    # the same 9 test images and captions in both datasets
    assert m[("pets", "zeroshot_retrieval")] | {"test_split": ""} == \
        m[("captions", "zeroshot_retrieval")] | {"test_split": ""}
    assert m[("captions", "prototype_collapse")]["image_distinct_prototypes"] >= 1


def test_collapse_from_python_on_a_folder_with_an_unreadable_image(xclip_run, tmp_path):
    """Without a prepared cache, the captions are those of the images that could be read."""
    from lipkit.eval import collapse
    from lipkit.eval.datasets import open_dataset

    images, labels = load_fashion_mnist("test")
    rows = []
    for i in range(40):
        Image.fromarray(images[i]).save(tmp_path / f"{i}.png")
        rows.append({"image": f"{i}.png", "label": int(labels[i]), "caption": f"item {i}"})
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows.insert(7, {"image": "broken.png", "label": 0, "caption": "the broken one"})
    table = tmp_path / "items.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    em = from_lipkit_run(xclip_run)
    data = open_dataset(str(table), em.eval, divide=False)
    (result,) = collapse.evaluate(em, data)
    assert sum(result.details["image_argmax_counts"]) == sum(result.details["text_argmax_counts"]) == 40
