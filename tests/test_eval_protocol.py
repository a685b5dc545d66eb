"""CLIP_benchmark's protocol for a dataset given by path, and the results that used to come out
wrong without a word (issue 25): half a test split scored, 1,000 of a user's images retrieved,
a stray shard switching the layout, transparency read differently by `lipkit.load`'s preprocess,
numbers that cannot miss (one class, top-5 of 5 classes), `--out` over a run's files."""
import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from _eval_data import (
    CLASSES,
    Item,
    StandIn,
    pets,
    preprocess,
    stand_in,
    tokenize,
    write_clip_benchmark,
    write_folder,
    write_jsonl,
)
from lipkit.cli import main
from lipkit.config import RunConfig, load_config
from lipkit.eval.adapter import _recorded_eval, load_open_clip
from lipkit.eval.errors import EvalError
from lipkit.eval.runner import evaluate_model

TEMPLATES = ["a photo of a {c}."]


def by_task(records):
    return {(r["dataset"], r["task"]): r["metrics"] for r in records}


def fake_open_clip(seen: list | None = None):
    """open_clip's two factory functions, giving the stand-in model (tests/_eval_data.py)."""
    def create_model_and_transforms(arch, pretrained=None):
        if seen is not None:
            seen.append((arch, pretrained))
        return StandIn(), None, preprocess

    module = types.ModuleType("open_clip")
    module.create_model_and_transforms = create_model_and_transforms
    module.get_tokenizer = lambda arch: tokenize
    return module


@pytest.fixture
def open_clip_stand_in(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", fake_open_clip())


def _one_line_error(capsys, args) -> str:
    """The error line of a `lipkit eval` that exits 2 (after any notes on skipped tasks)."""
    assert main(["eval", "open_clip:Stand-In", "--quiet"] + args) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [n for n, line in enumerate(lines) if line.startswith("lipkit: error: ")] == [len(lines) - 1], lines
    return lines[-1][len("lipkit: error: "):]


# ----------------------------------------------------------------------------- the protocol
def test_a_test_split_alone_is_scored_whole_and_the_probes_need_training_images(tmp_path, capsys):
    """Zero-shot and retrieval read all 9 images (they read 4 of them, "the other 50%", before);
    the probes are skipped in one line, not trained on half the test split unasked."""
    root = write_folder(tmp_path / "pets", {"test": pets()["test"]})
    out = evaluate_model(stand_in(datasets=[str(root)]), ["zeroshot", "retrieval", "linear", "knn"],
                         progress=False)
    m = by_task(out.records)
    assert set(m) == {("pets", "zeroshot_classification"), ("pets", "zeroshot_retrieval")}
    zs, r = m[("pets", "zeroshot_classification")], m[("pets", "zeroshot_retrieval")]
    assert zs["images"] == r["images"] == 9 and r["texts"] == 9
    assert zs["test_split"] == r["test_split"] == "all images"
    assert zs["acc1"] == pytest.approx(6 / 9)  # as worked out in tests/test_eval_datasets.py
    err = capsys.readouterr().err
    assert "linear on pets: skipped, it has no train split for the probes" in err
    assert "knn on pets: skipped, it has no train split for the probes" in err


def test_a_division_is_only_when_asked_and_the_probes_score_the_other_part(tmp_path):
    items = [Item(c, 6 * k + i, captions=[f"photo {6 * k + i}"]) for k, c in enumerate(CLASSES)
             for i in range(6)]
    root = write_folder(tmp_path / "pets", {"": items})
    em = stand_in(datasets=[str(root)], probe_train_fraction=0.5)
    out = evaluate_model(em, ["zeroshot", "retrieval", "linear", "knn"], progress=False)
    m = by_task(out.records)
    assert m[("pets", "zeroshot_classification")]["images"] == 18  # the whole split
    assert m[("pets", "zeroshot_retrieval")]["images"] == 18
    for task in ("linear_probe", "knn_classification"):
        assert m[("pets", task)]["images"] == 9, task  # the half the probes did not train on
        assert m[("pets", task)]["test_split"] == "the other 50% of the images (stratified by class, seed 0)"
    assert m[("pets", "linear_probe")]["train_samples"] == 9
    assert m[("pets", "linear_probe")]["probe_train"] == "50% of the images (stratified by class, seed 0)"
    assert em.model.images_seen == 18  # the division reuses the test split's embeddings


def test_retrieval_ranks_every_image_of_a_users_set(tmp_path, capsys):
    """1,010 captioned images: all of them are the gallery (1,000 were, silently, before)."""
    rows, images = [], tmp_path / "images"
    images.mkdir()
    for i in range(1010):
        a = np.zeros((8, 8, 3), dtype=np.uint8)
        a[..., 0], a[..., 1] = 20, i % 64
        Image.fromarray(a).save(images / f"{i:04d}.png")
        rows.append(json.dumps({"image": f"images/{i:04d}.png", "caption": f"photo {i % 64} number {i}"}))
    (tmp_path / "captions.jsonl").write_text("\n".join(rows) + "\n")
    em = stand_in(datasets=[str(tmp_path / "captions.jsonl")], batch_size=256)
    [record] = evaluate_model(em, ["retrieval"], progress=False).records
    assert record["metrics"]["images"] == 1010 and record["metrics"]["texts"] == 1010
    # a limit applies when it is set, and says so
    em = stand_in(datasets=[str(tmp_path / "captions.jsonl")], batch_size=256, retrieval_limit=100)
    [record] = evaluate_model(em, ["retrieval"], progress=False).records
    assert record["metrics"]["images"] == 100
    assert "retrieval on captions: 100 of its 1010 test images (eval.retrieval_limit=100)" in capsys.readouterr().err


def test_a_runs_recorded_old_defaults_read_as_unset():
    old = RunConfig()
    old.eval.retrieval_limit, old.eval.linear_train_limit, old.eval.probe_train_fraction = 1000, 10000, 0.5
    cfg = _recorded_eval(old).eval
    assert (cfg.retrieval_limit, cfg.linear_train_limit, cfg.probe_train_fraction) == (None, None, 0.0)
    chosen = RunConfig()
    chosen.eval.retrieval_limit = 500
    assert _recorded_eval(chosen).eval.retrieval_limit == 500
    # and a limit can be unset again on the command line: YAML null
    assert load_config(None, ["eval.retrieval_limit=500", "eval.retrieval_limit=null"]).eval.retrieval_limit is None


# ----------------------------------------------------------------------------- no silent results
def test_class_folders_beside_a_shard_are_refused_naming_both(tmp_path, capsys, open_clip_stand_in):
    """A stray x.tar used to turn a class-folder dataset into (empty) shards: every task skipped,
    exit 0, `[]` written."""
    root = write_folder(tmp_path / "photos", {"": pets()["test"]})
    write_clip_benchmark(tmp_path / "wds", {"test": pets()["test"]}, CLASSES, TEMPLATES)
    (root / "0.tar").write_bytes((tmp_path / "wds" / "test" / "0.tar").read_bytes())
    out = tmp_path / "results.json"
    assert _one_line_error(capsys, ["--dataset", str(root), "--out", str(out)]) == (
        f"{root}: two layouts in one folder, WebDataset shards (0.tar) and folders of images (cat/); "
        "move one of them away")
    assert not out.exists()
    # shards in one split and class folders in the other
    mixed = tmp_path / "mixed"
    write_folder(mixed, {"train": pets()["train"]})
    write_clip_benchmark(mixed, {"test": pets()["test"]}, CLASSES, TEMPLATES)
    assert _one_line_error(capsys, ["--dataset", str(mixed)]) == (
        f"{mixed}: two layouts in one dataset, WebDataset shards in test/ and class folders in train/; "
        "give both splits one layout")


def test_nothing_evaluated_is_an_error_not_an_empty_file(tmp_path, capsys, open_clip_stand_in):
    table = write_jsonl(tmp_path / "captions.jsonl", pets()["test"], label_key="no_label")
    out = tmp_path / "results.json"
    assert _one_line_error(capsys, ["--dataset", str(table), "--tasks", "zeroshot", "--out", str(out)]) == (
        "no results: every task was skipped on every dataset (the reasons are above); nothing written")
    main(["eval", "open_clip:Stand-In", "--quiet", "--dataset", str(table), "--tasks", "zeroshot"])
    assert capsys.readouterr().err.splitlines()[0] == "zeroshot on captions: skipped, it has no labels"
    assert not out.exists()


def test_numbers_that_cannot_miss_are_left_out_in_one_line(tmp_path, capsys):
    # one class: zero-shot would be 1.000 whatever the model
    one = write_folder(tmp_path / "one", {"": [Item("cat", i, captions=[f"photo {i}"]) for i in range(4)]})
    out = evaluate_model(stand_in(datasets=[str(one)]), ["zeroshot", "retrieval"], progress=False)
    assert ("one", "zeroshot_classification") not in by_task(out.records)
    err = capsys.readouterr().err
    assert "zeroshot on one: skipped, it has one class ('cat'): every image would be right" in err
    # 4 images, 4 captions: R@5 and R@10 cannot miss; R@1 can
    r = by_task(out.records)[("one", "zeroshot_retrieval")]
    assert "image_retrieval_recall@1" in r and "text_retrieval_recall@1" in r
    assert not any("@5" in k or "@10" in k for k in r)
    assert ("retrieval on one: left out image_retrieval_recall@5, image_retrieval_recall@10 (4 images); "
            "text_retrieval_recall@5, text_retrieval_recall@10 (4 distinct captions): no rank can exceed "
            "the gallery") in err
    # 3 classes: acc5 is always 1.000, left out
    three = write_folder(tmp_path / "three", {"": pets()["test"]})
    [zs] = evaluate_model(stand_in(datasets=[str(three)]), ["zeroshot"], progress=False).records
    assert "acc5" not in zs["metrics"] and zs["metrics"]["acc1"] == pytest.approx(6 / 9)
    assert "zeroshot on three: acc5 left out, with 3 classes every label is in the top 5" in capsys.readouterr().err


def test_out_never_writes_over_a_runs_files_or_into_a_folder(tmp_path, capsys, monkeypatch, open_clip_stand_in):
    from lipkit.eval import runner

    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded: the check came after the work")

    monkeypatch.setattr(runner, "load_model_spec", no_work)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: {}\n")
    (run / "model.safetensors").write_bytes(b"weights")
    target = run / "model.safetensors"
    assert _one_line_error(capsys, ["--out", str(target)]) == (
        f"--out {target}: would write over {target}, which is a file of the run directory {run}; "
        "give another file name")
    assert target.read_bytes() == b"weights"
    folder = tmp_path / "results"
    folder.mkdir()
    assert _one_line_error(capsys, ["--out", str(folder)]) == (
        f"--out {folder}: {folder} is a folder; give a file such as {folder / 'results.json'}, or "
        f"--out-dir {folder} for one file per record")
    other = tmp_path / "notes.json"
    other.write_text('{"mine": 1}')
    assert "which is not a results file of lipkit eval" in _one_line_error(capsys, ["--out", str(other)])


def test_a_results_file_of_lipkit_eval_is_replaced(tmp_path, open_clip_stand_in):
    root = write_folder(tmp_path / "pets", {"test": pets()["test"]})
    out = tmp_path / "results.json"
    args = ["eval", "open_clip:Stand-In", "--quiet", "--dataset", str(root), "--tasks", "zeroshot",
            "--out", str(out), "--set", "eval.num_workers=0"]
    assert main(args) == 0 and main(args) == 0
    assert [r["task"] for r in json.loads(out.read_text())] == ["zeroshot_classification"]


def test_an_open_clip_folder_is_one_spec(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setitem(sys.modules, "open_clip", fake_open_clip(seen))
    folder = tmp_path / "exported"
    folder.mkdir()
    with pytest.raises(EvalError, match="is not an open_clip folder"):
        load_open_clip(f"open_clip:local-dir:{folder}")
    (folder / "open_clip_config.json").write_text("{}")
    em = load_open_clip(f"open_clip:local-dir:{folder}")
    assert seen == [(f"local-dir:{folder}", None)] and em.name == f"local-dir:{folder}"


# ----------------------------------------------------------------------------- decoding
def _cut_out() -> Image.Image:
    """An RGBA cut-out whose transparent pixels hold a colour (as photo cut-outs often do)."""
    a = np.zeros((40, 40, 4), dtype=np.uint8)
    a[..., :3] = (200, 30, 30)
    a[10:30, 10:30, :3] = (30, 160, 40)
    a[10:30, 10:30, 3] = 255
    return Image.fromarray(a, "RGBA")


def _save(image: Image.Image, path, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def test_flatten_reads_16_bit_grey_exif_orientation_and_palettes(tmp_path):
    from lipkit.data.images import flatten_image, open_image

    grey = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    path = _save(Image.fromarray(grey), tmp_path / "deep.png")
    assert Image.open(path).mode == "I;16"
    got = np.asarray(open_image(path, mode="L"))
    assert np.array_equal(got, np.rint(grey / 257).astype(np.uint8))  # PIL alone: 255 from row 0 on
    # a photo stored sideways with EXIF orientation 6 (turn 90 degrees clockwise to view)
    wide = Image.new("RGB", (30, 10), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 5, 10))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(wide, tmp_path / "sideways.jpg", exif=exif, quality=95)
    upright = open_image(path)
    assert upright.size == (10, 30) and upright.getpixel((5, 1))[2] > 200  # blue now on top
    # a palette image with a transparent colour: painted onto white
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    pal.info["transparency"] = 1
    assert flatten_image(pal).getpixel((0, 0)) == (255, 255, 255)


def test_the_readme_snippet_embeds_as_lipkit_eval(tmp_path):
    """README: `preprocess(Image.open(p))` on a cut-out gave other pixels (max difference 2.0)
    than `lipkit eval` and training, which paint transparency onto white."""
    import lipkit
    from _interop_data import RGB, tiny_run
    from lipkit.data.transforms import ImageTransform
    from lipkit.eval.adapter import from_lipkit_run
    from lipkit.eval.context import Context
    from lipkit.eval.datasets import open_dataset

    run = tiny_run(tmp_path / "run", *RGB)
    photos = tmp_path / "photos" / "test"
    paths = [_save(_cut_out(), photos / "cut" / "a.png"),
             _save(_cut_out().convert("RGB").convert("P", palette=Image.ADAPTIVE), photos / "flat" / "b.png")]
    model, preprocess_, _ = lipkit.load(tmp_path / "run")
    images = torch.stack([preprocess_(Image.open(p)) for p in paths])  # the README's line
    assert torch.equal(images, torch.stack([preprocess_(p) for p in paths]))  # a path works too
    with torch.no_grad():
        readme = model.encode_image(images, normalize=True)

    em = from_lipkit_run(tmp_path / "run", ["eval.num_workers=0"])
    ctx = Context(em, open_dataset(str(photos.parent), em.eval), progress=False)
    assert torch.allclose(ctx.embeds("test"), readme, atol=1e-6)
    # the transform alone (what preprocess was) reads the transparent pixels' colour
    plain = ImageTransform.__call__(preprocess_, Image.open(paths[0]))
    assert (plain - images[0]).abs().max() > 1.0
    assert run.model is not None


def test_the_adamw_probe_is_seeded_and_leaves_the_generator_alone(tmp_path):
    """CLIP_benchmark's solver (`eval.linear_solver=adamw`; its agreement with CLIP_benchmark is
    tests/test_clip_benchmark_agreement.py): the same record twice, the caller's random state
    untouched, and the settings it trained with in the record."""
    from lipkit.eval import adamw_probe

    root = write_folder(tmp_path / "pets", pets())
    runs = [evaluate_model(stand_in(datasets=[str(root)], linear_solver="adamw"), ["linear"], progress=False).records
            for _ in range(2)]
    assert runs[0] == runs[1]
    x, y = torch.randn(20, 4), torch.arange(20) % 3
    torch.manual_seed(123)
    before = torch.get_rng_state()
    weight = adamw_probe.fit(x, y, seed=5).linear.weight
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(weight, adamw_probe.fit(x, y, seed=5).linear.weight)
    assert not torch.equal(weight, adamw_probe.fit(x, y, seed=6).linear.weight)
    m = runs[0][0]["metrics"]
    assert {k: m[k] for k in ("solver", "lr", "epochs", "batch_size", "weight_decay")} == \
        {"solver": "adamw", "lr": 0.1, "epochs": 10, "batch_size": 64, "weight_decay": 0.0}
    assert "best_C" not in m and m["train_samples"] == 12 and m["images"] == 9
