"""`lipkit eval --dataset PATH`: class folders, tables and CLIP_benchmark's shards, each built
here from generated images with known labels and scored by a stand-in model whose embeddings
are set by hand (tests/_eval_data.py), against numbers worked out in the comments."""
import json
import sys
import tarfile
import types

import pytest

from _eval_data import (
    CLASSES,
    Item,
    StandIn,
    drawing,
    folder_order,
    pets,
    preprocess,
    stand_in,
    tokenize,
    write_clip_benchmark,
    write_folder,
    write_jsonl,
    write_tar,
)
from _eval_runs import HAVE_EVAL_EXTRA
from lipkit.cli import main
from lipkit.config import EvalConfig
from lipkit.eval.errors import EvalError
from lipkit.eval.results import RECORD_KEYS
from lipkit.eval.runner import evaluate_model
from lipkit.eval.datasets import open_dataset

TEMPLATES = ["a photo of a {c}.", "itap of a {c}."]


# Zero-shot: a class prompt scores 1/sqrt 2 with the images showing that class, 0 with the rest,
# so every image is predicted as the class it shows: 6 of 9 right; per class cat 2/2, dog 2/3,
# red fox 2/4 -> mean recall (1 + 2/3 + 1/2) / 3 = 13/18. The probes learn "shown class ->
# label" from a training set where the two agree, so they predict what zero-shot predicts.
# With 3 classes every label is in the top 5: acc5 is left out, never reported as 1.0.
CLASSIFIED = {"acc1": 6 / 9, "mean_per_class_recall": 13 / 18}
# Retrieval over the 9 test images and their 9 distinct captions: "photo <id>" scores 1/sqrt 2
# with its image alone (rank 1 both ways). Images 23 and 27 score 0 with every caption, theirs
# included, so ties go to the lower index: image->text ranks 4 and 8 (their captions are the
# 4th and 8th texts), and text->image the same (the images are the 4th and 8th).
# R@1 = 7/9, R@5 = 8/9 (rank 8 > 5), median rank 1; R@10 cannot miss in a gallery of 9 and is
# left out.
RETRIEVED = {f"{d}_retrieval_recall@{k}": v for d in ("text", "image")
             for k, v in ((1, 7 / 9), (5, 8 / 9))} | \
            {"text_retrieval_median_rank": 1.0, "image_retrieval_median_rank": 1.0}


def by_task(records):
    return {(r["dataset"], r["task"]): r["metrics"] for r in records}


def picked(metrics: dict, expected: dict) -> dict:
    return {k: metrics[k] for k in expected}


def layout(kind: str, root) -> dict:
    """eval settings naming pets() in layout `kind`."""
    data = pets()
    if kind == "folder":
        return {"datasets": [str(write_folder(root / "pets", data))]}
    if kind == "shards":
        return {"datasets": [str(write_clip_benchmark(root / "pets", data, CLASSES, TEMPLATES))]}
    # a table per split: the test table, and the train table for the probes
    return {"datasets": [str(write_jsonl(root / "pets.jsonl", data["test"]))],
            "dataset_train": str(write_jsonl(root / "pets_train.jsonl", data["train"]))}


@pytest.mark.parametrize("kind", ["folder", "shards", "table"])
def test_each_layout_gives_the_hand_computed_numbers(kind, tmp_path):
    em = stand_in(**layout(kind, tmp_path))
    out = evaluate_model(em, ["zeroshot", "linear", "knn", "retrieval"], progress=False)
    name = "wds/pets" if kind == "shards" else "pets"
    m = by_task(out.records)
    assert set(m) == {(name, t) for t in ("zeroshot_classification", "linear_probe",
                                          "knn_classification", "zeroshot_retrieval")}
    for task in ("zeroshot_classification", "linear_probe", "knn_classification"):
        assert picked(m[(name, task)], CLASSIFIED) == pytest.approx(CLASSIFIED), task
        assert "acc5" not in m[(name, task)] and m[(name, task)]["images"] == 9
    assert picked(m[(name, "zeroshot_retrieval")], RETRIEVED) == pytest.approx(RETRIEVED)
    assert not {"text_retrieval_recall@10", "image_retrieval_recall@10"} & set(m[(name, "zeroshot_retrieval")])
    assert m[(name, "linear_probe")]["train_samples"] == 12
    assert m[(name, "zeroshot_classification")]["skipped"] == 0
    assert m[(name, "linear_probe")]["probe_train"] == ("pets_train" if kind == "table" else "train")
    assert em.model.images_seen == 21  # each of the 12 + 9 images embedded once


def test_permuting_labels_changes_the_numbers_as_expected(tmp_path):
    data = pets()
    test = data["test"]
    # The test labels reversed: cat cat dog dog dog fox fox fox fox -> fox fox fox fox dog dog dog
    # cat cat. Shown: cat cat dog cat dog fox dog dog fox: only positions 4 and 6 (dogs) agree,
    # acc1 2/9; per label: fox 0/4, dog 2/3, cat 0/2 -> mean recall 2/9. Retrieval is unchanged.
    labels = [it.label for it in test][::-1]
    permuted = [Item(lab, it.ident, it.shows, it.captions) for lab, it in zip(labels, test)]
    em = stand_in(datasets=[str(write_jsonl(tmp_path / "pets.jsonl", permuted))],
                  dataset_train=str(write_jsonl(tmp_path / "pets_train.jsonl", data["train"])))
    m = by_task(evaluate_model(em, ["zeroshot", "linear", "retrieval"], progress=False).records)
    expected = {"acc1": 2 / 9, "mean_per_class_recall": 2 / 9}
    assert picked(m[("pets", "zeroshot_classification")], expected) == pytest.approx(expected)
    assert picked(m[("pets", "linear_probe")], expected) == pytest.approx(expected)
    assert picked(m[("pets", "zeroshot_retrieval")], RETRIEVED) == pytest.approx(RETRIEVED)


def test_the_three_layouts_give_identical_records(tmp_path):
    """One split, 6 images a class (some filed under the wrong class, some with two captions,
    one caption written for two images), in the three layouts; the probes' half (asked for) is
    drawn the same way from each, so the records agree in everything but the dataset's name."""
    items = [Item(c, 6 * k + i, drawn=CLASSES[(k + 1) % 3] if i == 5 else "",
                  captions=[f"photo {6 * k + i}"] + (["a pet"] if i % 2 else []))
             for k, c in enumerate(CLASSES) for i in range(6)]
    items = folder_order(items)
    specs = [f"folder={write_folder(tmp_path / 'pets', {'': items})}",
             f"table={write_jsonl(tmp_path / 'table' / 'pets.jsonl', items)}",
             f"shards={write_clip_benchmark(tmp_path / 'shards', {'test': items}, CLASSES, TEMPLATES)}"]
    tasks = ["zeroshot", "linear", "knn", "retrieval"] + (["ood", "text"] if HAVE_EVAL_EXTRA else [])
    words = tmp_path / "words.tsv"  # word pairs the stand-in tells apart: cat-cat 1, others 0
    words.write_text("cat\tcat\t9\ncat\tdog\t2\ndog\tred fox\t1\n")
    em = stand_in(datasets=specs, ood_corruptions=["contrast"], ood_severities=[2],
                  wordsim_path=str(words), probe_train_fraction=0.5)
    out = evaluate_model(em, tasks, progress=False)
    # word similarity reads no dataset: one record for the model, not one per dataset
    assert [r["dataset"] for r in out.records if r["task"] == "word_similarity"] == ["words"] * HAVE_EVAL_EXTRA
    per_layout = {}
    for r in out.records:
        if r["task"] == "word_similarity":
            continue
        layout_name = r["dataset"].split("-")[0]
        per_layout.setdefault(layout_name, []).append({**r, "dataset": r["dataset"][len(layout_name):]})
    assert set(per_layout) == {"folder", "table", "shards"}
    assert per_layout["folder"] == per_layout["table"] == per_layout["shards"]
    records = per_layout["folder"]
    assert len(records) == 4 + (2 if HAVE_EVAL_EXTRA else 0)
    metrics = {r["task"]: r["metrics"] for r in records}
    # zero-shot and retrieval score the whole split, the probes the half they did not train on
    zs, lin, r = (metrics[t] for t in ("zeroshot_classification", "linear_probe", "zeroshot_retrieval"))
    assert zs["test_split"] == r["test_split"] == "all images" and zs["images"] == r["images"] == 18
    assert lin["test_split"] == "the other 50% of the images (stratified by class, seed 0)"
    assert lin["probe_train"] == "50% of the images (stratified by class, seed 0)"
    assert lin["images"] == lin["train_samples"] == 9 == metrics["knn_classification"]["images"]
    assert r["distinct_texts"] < r["texts"]  # "a pet" is one caption


# ----------------------------------------------------------------------------- CLIP_benchmark
def fake_open_clip():
    def create_model_and_transforms(arch, pretrained=None):
        return StandIn(), None, preprocess

    module = types.ModuleType("open_clip")
    module.create_model_and_transforms = create_model_and_transforms
    module.get_tokenizer = lambda arch: tokenize
    return module


def test_clip_benchmark_layout_files_and_records(tmp_path, monkeypatch, capsys):
    root = write_clip_benchmark(tmp_path / "wds_pets", pets(), CLASSES, TEMPLATES, shard_size=4)
    assert (root / "train" / "nshards.txt").read_text() == "3\n"  # 12 samples, 4 a shard
    data = open_dataset(str(root), EvalConfig())
    assert data.name == "wds/pets" and data.class_names == CLASSES and data.templates == TEMPLATES
    assert len(data.train) == 12 and len(data.test) == 9

    monkeypatch.setitem(sys.modules, "open_clip", fake_open_clip())
    out = tmp_path / "records"
    assert main(["eval", "open_clip:Stand-In:hand-set", "--dataset", str(root), "--tasks",
                 "zeroshot,retrieval", "--out-dir", str(out), "--quiet",
                 "--set", "eval.num_workers=0"]) == 0
    record = json.loads((out / "Stand-In__wds_pets__zeroshot_classification.json").read_text())
    assert list(record) == list(RECORD_KEYS) == ["dataset", "model", "pretrained", "task",
                                                 "metrics", "language"]
    assert {k: record[k] for k in RECORD_KEYS if k != "metrics"} == {
        "dataset": "wds/pets", "model": "Stand-In", "pretrained": "hand-set",
        "task": "zeroshot_classification", "language": "en"}
    assert picked(record["metrics"], CLASSIFIED) == pytest.approx(CLASSIFIED)
    record = json.loads((out / "Stand-In__wds_pets__zeroshot_retrieval.json").read_text())
    assert picked(record["metrics"], RETRIEVED) == pytest.approx(RETRIEVED)
    assert "wds/pets" in capsys.readouterr().out  # the summary table

    # classnames.txt is what names the .cls indices: "dog, cat, red fox" turns label 0 (the cat
    # folder's images) into dogs and label 1 into cats. Images shown as cats are now right only
    # when labelled 1 (image 23), dogs never (labels 0 -> cat, 1 -> ...: 22, 24 wrong), foxes as
    # before (25, 28): 3 of 9; recall per class: 0/2, 1/3, 2/4 -> mean 5/18.
    (root / "classnames.txt").write_text("dog\ncat\nred fox\n")
    em = stand_in(datasets=[str(root)])
    m = by_task(evaluate_model(em, ["zeroshot"], progress=False).records)
    expected = {"acc1": 3 / 9, "mean_per_class_recall": 5 / 18}
    assert picked(m[("wds/pets", "zeroshot_classification")], expected) == pytest.approx(expected)


# ----------------------------------------------------------------------------- bad images
def test_unreadable_images_are_skipped_counted_and_reported(tmp_path, capsys):
    data = pets()
    table = write_jsonl(tmp_path / "pets.jsonl", data["test"])
    (tmp_path / "images" / "099.png").write_bytes(b"not a png at all")
    with table.open("a") as f:
        f.write(json.dumps({"image": "images/099.png", "label": "cat", "caption": "photo 50"}) + "\n")
        f.write(json.dumps({"image": "images/missing.png", "label": "dog", "caption": "photo 51"}) + "\n")
    shards = write_clip_benchmark(tmp_path / "shards", {"train": data["train"]}, CLASSES, TEMPLATES)
    # a sample whose image is cut short, and a sample with no image: 2 more, in the train split
    write_tar(shards / "train" / "3.tar", [("s0000100.webp", drawing("cat", 40, "WEBP")[:20]),
                                           ("s0000100.cls", b"0"), ("s0000101.cls", b"1")])
    (shards / "train" / "nshards.txt").write_text("4\n")
    em = stand_in(datasets=[f"pets={table}"], dataset_train=str(shards))
    m = by_task(evaluate_model(em, ["zeroshot", "linear", "retrieval"], progress=False).records)
    # the 9 good test images give the numbers of the clean set
    assert picked(m[("pets", "zeroshot_classification")], CLASSIFIED) == pytest.approx(CLASSIFIED)
    assert picked(m[("pets", "zeroshot_retrieval")], RETRIEVED) == pytest.approx(RETRIEVED)
    assert m[("pets", "zeroshot_classification")]["skipped"] == 2
    assert m[("pets", "linear_probe")]["skipped"] == 4 and m[("pets", "linear_probe")]["train_samples"] == 12
    assert picked(m[("pets", "linear_probe")], CLASSIFIED) == pytest.approx(CLASSIFIED)
    err = capsys.readouterr().err
    assert "skipped " + str(tmp_path / "images" / "missing.png") + ": file not found" in err
    assert "099.png: cannot decode image" in err and "s0000101: no image field" in err
    assert "3.tar:s0000100.webp: cannot decode image" in err


def test_samples_the_shift_dataset_cannot_use_are_counted_and_reported(tmp_path, capsys):
    data = pets()
    table = write_jsonl(tmp_path / "pets.jsonl", data["test"])
    shift = write_clip_benchmark(tmp_path / "sketches", {"test": data["test"]}, CLASSES, TEMPLATES)
    write_tar(shift / "test" / "3.tar", [("s0000200.cls", b"1")])  # a sample with no image
    (shift / "test" / "nshards.txt").write_text("4\n")
    em = stand_in(datasets=[f"pets={table}"], shift=str(shift), ood_corruptions=[], probe_train_fraction=0.5)
    m = by_task(evaluate_model(em, ["ood"], progress=False).records)
    assert m[("pets-shift", "ood_classification")]["skipped"] == 1
    assert "s0000200: no image field" in capsys.readouterr().err


# ----------------------------------------------------------------------------- tasks that do not apply
def test_tasks_that_do_not_apply_are_skipped_with_one_line(tmp_path, capsys):
    items = pets()["test"]
    captions_only = tmp_path / "captions" / "pets.jsonl"
    write_jsonl(captions_only, items, label_key="no_label")
    index_labels = tmp_path / "indices" / "pets.jsonl"
    write_jsonl(index_labels, [Item(str(CLASSES.index(it.label)), it.ident, it.shows)
                               for it in items])
    em = stand_in(datasets=[f"captions={captions_only}", f"indices={index_labels}"])
    out = evaluate_model(em, ["zeroshot", "linear", "retrieval"], progress=False)
    assert sorted(by_task(out.records)) == [("captions", "zeroshot_retrieval")]
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["zeroshot on captions: skipped, it has no labels",
                     "linear on captions: skipped, it has no labels",
                     "retrieval on captions: left out image_retrieval_recall@10 (9 images); "
                     "text_retrieval_recall@10 (9 distinct captions): no rank can exceed the gallery",
                     "zeroshot on indices: skipped, it has no class names (a classnames.txt "
                     "beside it, or eval.prompts_path)",
                     "linear on indices: skipped, it has no train split for the probes (give "
                     "--dataset-train, or divide its test split with eval.probe_train_fraction=0.5)",
                     "retrieval on indices: skipped, it has no captions"]


def test_a_folder_with_only_a_test_split_reads_its_classes(tmp_path):
    items = pets()["test"]
    em = stand_in(datasets=[f"flat={write_folder(tmp_path / 'flat', {'': items})}",
                            f"nested={write_folder(tmp_path / 'nested', {'test': items})}"],
                  probe_train_fraction=0.5)
    m = by_task(evaluate_model(em, ["zeroshot", "linear"], progress=False).records)
    assert m[("nested", "zeroshot_classification")] == m[("flat", "zeroshot_classification")]
    assert m[("nested", "linear_probe")] == m[("flat", "linear_probe")]


def test_probes_with_one_image_a_class_are_skipped_not_a_traceback(tmp_path, capsys):
    items = pets()["test"]
    table = tmp_path / "pets.jsonl"
    write_jsonl(table, items)
    em = stand_in(datasets=[f"pets={table}"], dataset_train=str(table), few_shot_k=1, ood_corruptions=[])
    out = evaluate_model(em, ["linear", "knn", "ood", "text"], progress=False)
    assert ("pets", "knn_classification") in by_task(out.records)  # kNN needs no held-out image
    assert not {("pets", "linear_probe"), ("pets", "ood_classification")} & set(by_task(out.records))
    err = capsys.readouterr().err
    reason = "its probe training set has one image per class (eval.few_shot_k=1), none to hold out for choosing the probe's C"
    assert f"linear on pets: skipped, {reason}" in err and f"ood on pets: skipped, {reason}" in err


def test_labelled_folder_captions_table_and_shift_in_one_command(tmp_path, monkeypatch):
    """The README's command: a labelled folder, a captions table, a style shift (with the
    corruptions too when lipkit[eval] is installed)."""
    monkeypatch.setitem(sys.modules, "open_clip", fake_open_clip())
    data = pets()
    photos = write_folder(tmp_path / "photos", data)
    captions = write_jsonl(tmp_path / "captions.jsonl", data["test"], label_key="no_label")
    # 6 sketches with the same classes, one of each class showing another class: 3/6 right
    sketches = [Item(c, 40 + 2 * k + i, drawn=CLASSES[(k + 1) % 3] if i == 0 else "")
                for k, c in enumerate(CLASSES) for i in range(2)]
    shift = write_folder(tmp_path / "sketches", {"": sketches})
    out = tmp_path / "results.json"
    assert main(["eval", "open_clip:Stand-In", "--dataset", str(photos), "--dataset", str(captions),
                 "--shift", str(shift), "--tasks", "zeroshot,linear,knn,retrieval,ood", "--quiet",
                 "--out", str(out), "--set", f"eval.ood_corruptions=[{'contrast' if HAVE_EVAL_EXTRA else ''}]",
                 "--set", "eval.ood_severities=[1]", "--set", "eval.num_workers=0"]) == 0
    m = by_task(json.loads(out.read_text()))
    assert set(m) == {("photos", t) for t in ("zeroshot_classification", "linear_probe",
                                              "knn_classification", "zeroshot_retrieval")} | \
        {("photos-shift", "ood_classification"), ("captions", "zeroshot_retrieval")} | \
        ({("photos-c", "ood_classification")} if HAVE_EVAL_EXTRA else set())
    assert picked(m[("captions", "zeroshot_retrieval")], RETRIEVED) == pytest.approx(RETRIEVED)
    s = m[("photos-shift", "ood_classification")]
    # clean: the 9 test images, 6/9 (as zero-shot above); shifted: 3/6; drop 2/3 - 1/2 = 1/6
    expected = {f"{p}_{k}": v for p in ("zeroshot", "linear")
                for k, v in (("clean_acc1", 2 / 3), ("shifted_acc1", 1 / 2), ("sketches_acc1", 1 / 2),
                             ("drop", 1 / 6), ("relative_drop", 1 / 4))}
    assert picked(s, expected) == pytest.approx(expected)
    assert s["images"] == 9 and s["shifted_images"] == 6 and s["shift_dataset"] == "sketches"


def test_workers_decode_the_same_batches(tmp_path):
    root = write_folder(tmp_path / "pets", pets())
    records = [evaluate_model(stand_in(datasets=[str(root)], num_workers=w),
                              ["zeroshot", "knn", "retrieval"], progress=False).records
               for w in (0, 2)]
    assert records[0] == records[1]


# ----------------------------------------------------------------------------- bad input
def _error(capsys, args) -> str:
    assert main(["eval", "open_clip:Stand-In", "--quiet", "--tasks", "zeroshot"] + args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lipkit: error: ")
    return err.strip()[len("lipkit: error: "):]


def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", fake_open_clip())
    data = pets()
    # a label not in the class list: the table's classnames.txt has three classes
    table = tmp_path / "table" / "pets.csv"
    write_jsonl(tmp_path / "table" / "unused.jsonl", data["test"][:2])
    table.write_text("image,label\nimages/020.png,cat\nimages/021.png,wolf\n")
    (table.parent / "classnames.txt").write_text("cat\ndog\nred fox\n")
    assert _error(capsys, ["--dataset", str(table)]) == \
        f"{table}:3: label 'wolf' is not in the class list ({table.parent / 'classnames.txt'}: 3 classes)"
    table.write_text("image,label\nimages/020.png,7\n")
    assert _error(capsys, ["--dataset", str(table)]).startswith(f"{table}:2: label 7 is not in the class list")

    # a class folder with no images
    folder = write_folder(tmp_path / "folder", {"": data["test"]})
    (folder / "emu").mkdir()
    assert _error(capsys, ["--dataset", str(folder)]) == f"{folder / 'emu'}: class folder has no images"

    # an empty split
    shards = write_clip_benchmark(tmp_path / "shards", data, CLASSES, TEMPLATES)
    for shard in (shards / "test").glob("*"):
        shard.unlink()
    assert _error(capsys, ["--dataset", str(shards)]) == f"{shards / 'test'}: empty split (no .tar shards)"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert _error(capsys, ["--dataset", str(empty)]) == f"{empty}: no rows"

    # a template without a place for the class name
    shards = write_clip_benchmark(tmp_path / "shards2", data, CLASSES, ["a photo of a {c}.", "a photo"])
    templates = shards / "zeroshot_classification_templates.txt"
    assert _error(capsys, ["--dataset", str(shards)]) == \
        f"{templates}:2: template 'a photo' has no '{{c}}' or '{{}}' for the class name"

    # a compressed shard: its images cannot be read at their offsets
    packed = tmp_path / "packed"
    (packed / "test").mkdir(parents=True)
    with tarfile.open(packed / "test" / "0.tar", "w:gz") as tf:
        tf.add(next((shards / "train").glob("*.tar")), arcname="inner")
    assert _error(capsys, ["--dataset", str(packed)]).startswith(
        f"{packed / 'test' / '0.tar'}: not an uncompressed tar shard")

    # not a dataset at all
    assert _error(capsys, ["--dataset", "cifar"]) == \
        "cifar: no such file or folder, and not a built-in dataset (fashion-mnist, tuxpaint)"
    # a shift whose classes are not the dataset's
    other = write_folder(tmp_path / "birds", {"": [Item("owl", 1, drawn="cat")]})
    photos = write_folder(tmp_path / "photos", data)
    assert _error(capsys, ["--dataset", str(photos), "--shift", str(other)]) == \
        f"{other}: class 'owl' is not a class of photos"


def test_layout_details(tmp_path):
    """Captions from .txt files, `_` as a space, NAME=PATH, labels that mix indices and names."""
    root = write_folder(tmp_path / "pets", {"": pets()["test"]})
    data = open_dataset(f"mine={root}", EvalConfig())
    assert data.name == "mine" and data.class_names == CLASSES
    assert data.templates[0] == "a photo of a {c}."  # the generic set
    whole = open_dataset(str(root), EvalConfig(), divide=False).test
    assert whole.captions[3] == ["photo 63"] and whole.labels.tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 2]
    table = tmp_path / "mixed.csv"
    table.write_text("image,label\na.png,0\nb.png,cat\n")
    with pytest.raises(EvalError, match=r"mixed.csv:2: label 0 is an index, but .*mixed.csv:3 names a class"):
        open_dataset(str(table), EvalConfig())
    # two caption columns, and a second row for an image: three captions, one label
    table = tmp_path / "captions.tsv"
    table.write_text("image\tclass\tcaption\tother\na.png\tdog\tone\ttwo\nb.png\tcat\tx\t\n"
                     "a.png\tdog\tthree\tone\n")
    cfg = EvalConfig(label_column="class", caption_columns=["caption", "other"])
    whole = open_dataset(str(table), cfg, divide=False).test
    assert whole.captions == [["one", "two", "three"], ["x"]] and whole.labels.tolist() == [1, 0]


def test_limits_take_images_spread_over_the_set(tmp_path):
    """A folder is ordered by class: a limit takes images spread over it, not the first ones."""
    root = write_folder(tmp_path / "pets", pets())
    em = stand_in(datasets=[str(root)], test_limit=5, linear_train_limit=6, retrieval_limit=3)
    m = by_task(evaluate_model(em, ["zeroshot", "linear", "retrieval"], progress=False).records)
    # test positions 0 2 4 6 8 of 9: ids 20 (cat), 22, 24 (dogs), 26 (a fox shown as a dog), 28
    assert m[("pets", "zeroshot_classification")]["acc1"] == pytest.approx(4 / 5)
    # train positions round(0, 2.2, 4.4, 6.6, 8.8, 11) = ids 0 2 | 4 7 | 9 11: two of each class
    assert m[("pets", "linear_probe")]["train_samples"] == 6
    # retrieval on test positions 0 2 4 of those 5: ids 20, 24, 28, each with its own caption
    r = m[("pets", "zeroshot_retrieval")]
    assert r["images"] == 3 and r["text_retrieval_recall@1"] == r["image_retrieval_recall@1"] == 1.0
