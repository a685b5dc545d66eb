"""Pair datasets from every file layout, built in the test from small real images."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lipkit.config import ConfigError, DataConfig, SourceConfig, VisionConfig
from lipkit.data import DataSourceError, ImageTransform, MixedPairs, build_train_dataset, open_pairs
from lipkit.data.formats import read_folder, read_jsonl, read_table
from lipkit.data.mix import allocate
from lipkit.data.pairs import decode_skips

TF = ImageTransform(8)
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "white": (255, 255, 255)}


def save_image(path: Path, colour, size=(12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def expected_pixel(colour) -> list[float]:
    return [(c / 255 - 0.5) / 0.5 for c in colour]


def colour_of(image: torch.Tensor) -> tuple:
    """The (uniform) colour of a transformed image, back in 0..255."""
    return tuple(int(round((v * 0.5 + 0.5) * 255)) for v in image[:, 4, 4].tolist())


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    save_image(root / "red.png", COLOURS["red"])
    (root / "red.txt").write_text("a red square\n\nA red   square, again\n")
    save_image(root / "sub" / "deeper" / "green.jpg", COLOURS["green"])
    (root / "sub" / "deeper" / "green.txt").write_text("a green square")
    save_image(root / "sub" / "blue.png", COLOURS["blue"])  # no caption file
    save_image(root / "white.png", COLOURS["white"])
    (root / "white.txt").write_text("  \n")  # empty caption
    (root / "notes.txt").write_text("not a caption of anything")
    return root


def test_folder_recursive_with_several_captions(folder):
    records, skipped = read_folder(folder)
    assert [Path(r.image).name for r in records] == ["red.png", "green.jpg"]
    assert records[0].captions == ("a red square", "A red square, again")  # whitespace folded
    assert records[1].captions == ("a green square",)
    reasons = {Path(w).name: r for w, r in skipped}
    assert reasons == {"blue.png": "no caption file blue.txt", "white.png": "empty caption file white.txt"}

    ds = open_pairs(str(folder), TF)
    assert len(ds) == 2 and len(ds.skipped) == 2
    item = ds[1]
    assert item["image"].shape == (3, 8, 8) and item["caption"] == "a green square" and item["index"] == 1
    assert colour_of(item["image"])[1] > 240  # green survived JPEG
    assert item["skipped"] == "" and "label" not in item
    assert ds.captions(0) == ("a red square", "A red square, again")


def test_one_caption_per_access_fresh_each_epoch(folder):
    ds = open_pairs(str(folder), TF, seed=3)
    per_epoch = []
    for e in range(40):
        ds.set_epoch(e)
        per_epoch.append(ds[0]["caption"])
    assert set(per_epoch) == {"a red square", "A red square, again"}
    again = open_pairs(str(folder), TF, seed=3)
    again.set_epoch(7)
    assert again[0]["caption"] == per_epoch[7]  # reproducible from (seed, epoch, index)


def test_csv_relative_paths_custom_columns_and_grouping(tmp_path):
    save_image(tmp_path / "img" / "a.png", COLOURS["red"])
    save_image(tmp_path / "img" / "b.png", COLOURS["blue"])
    (tmp_path / "meta").mkdir()
    csv = tmp_path / "meta" / "pairs.csv"
    csv.write_text(
        "filepath,title,cls\n"
        "../img/a.png,a red square,0\n"
        '../img/b.png,"a blue square, with a comma",1\n'
        "../img/a.png,red again,0\n"
        "../img/missing.png,nothing here,1\n"
        "../img/b.png,,1\n"
    )
    records, skipped = read_table(csv, "filepath", "title", "cls")
    assert [Path(r.image).name for r in records] == ["a.png", "b.png"]
    assert records[0].captions == ("a red square", "red again") and records[0].label == 0
    assert records[1].captions == ("a blue square, with a comma",) and records[1].label == 1
    assert [(w.split(":")[-1], r.split(" ")[0]) for w, r in skipped] == [("5", "image"), ("6", "empty")]
    assert "missing.png not found" in skipped[0][1]

    ds = open_pairs(SourceConfig(path=str(csv), image_column="filepath", caption_column="title", label_column="cls"), TF)
    assert ds[1]["label"] == 1 and colour_of(ds[1]["image"]) == (0, 0, 255)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["label"].tolist() == [0, 1] and batch["image"].shape == (2, 3, 8, 8)


def test_tsv_and_absolute_paths(tmp_path):
    img = save_image(tmp_path / "x.png", COLOURS["green"])
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text(f"image\tcaption\n{img}\ta caption, with commas, kept whole\n")
    ds = open_pairs(str(tsv), TF)
    assert len(ds) == 1 and ds[0]["caption"] == "a caption, with commas, kept whole"


def test_missing_column_is_one_line_error(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("path,text\nx.png,hi\n")
    with pytest.raises(DataSourceError, match=r"p\.csv: no column 'image', 'caption'; the header has 'path', 'text'"):
        read_table(csv)


def test_jsonl_string_or_list_captions_and_bad_lines(tmp_path):
    save_image(tmp_path / "a.png", COLOURS["red"])
    save_image(tmp_path / "b.png", COLOURS["blue"])
    lines = [
        json.dumps({"image": "a.png", "caption": ["one", "two", ""]}),
        "{not json",
        json.dumps({"image": "b.png", "caption": "three"}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"caption": "no image"}),
        "",
        json.dumps({"image": "gone.png", "caption": "missing file"}),
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    records, skipped = read_jsonl(path)
    assert [r.captions for r in records] == [("one", "two"), ("three",)]
    assert sorted(int(w.rsplit(":", 1)[1]) for w, _ in skipped) == [2, 4, 5, 7]
    ds = open_pairs(str(path), TF)
    assert colour_of(ds[1]["image"]) == (0, 0, 255) and ds[1]["caption"] == "three"


def test_format_detection_and_errors(tmp_path, folder):
    with pytest.raises(DataSourceError, match=r"nope\.csv: cannot open \(No such file"):
        open_pairs(str(tmp_path / "nope.csv"), TF)
    with pytest.raises(DataSourceError, match="no such file or folder"):
        open_pairs(str(tmp_path / "nope"), TF)
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(DataSourceError, match="cannot tell its format"):
        open_pairs(str(tmp_path / "x.parquet"), TF)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataSourceError, match="no usable image-caption pairs"):
        open_pairs(str(empty), TF)
    with pytest.raises(ConfigError, match="unknown built-in source"):
        open_pairs(SourceConfig(path="cifar", format="builtin"), TF)


def test_limit_and_train_limit(folder):
    assert len(open_pairs(SourceConfig(path=str(folder), limit=1), TF)) == 1
    ds = build_train_dataset(DataConfig(source=str(folder), train_limit=1), vision=VisionConfig(image_size=8, channels=3))
    assert len(ds) == 1 and ds[0]["image"].shape == (3, 8, 8)


def test_build_train_dataset_uses_the_vision_size_and_checks_channels(folder):
    ds = build_train_dataset(DataConfig(source=str(folder)), vision=VisionConfig(image_size=16, channels=3))
    assert ds[0]["image"].shape == (3, 16, 16)
    grey = build_train_dataset(DataConfig(source=str(folder), image_mean=[0.5], image_std=[0.5]),
                               vision=VisionConfig(image_size=8, channels=1))
    assert grey[0]["image"].shape == (1, 8, 8)
    with pytest.raises(ConfigError, match="model.vision.channels is 1"):
        build_train_dataset(DataConfig(source=str(folder)), vision=VisionConfig(image_size=8, channels=1))
    with pytest.raises(ConfigError, match="data.source"):
        build_train_dataset(DataConfig(source=str(folder) + "-absent"))


def test_digits_builtin_templated():
    ds = open_pairs("digits", TF)
    assert len(ds) == 1797
    item = ds[0]
    assert item["label"] == 0 and "digit zero" in item["caption"] and item["image"].shape == (3, 8, 8)
    # sklearn's 0..16 pixel values scaled to 0..255
    from sklearn.datasets import load_digits

    raw = load_digits().images[0]
    np.testing.assert_array_equal(ds.images[0], np.round(raw * 255 / 16).astype(np.uint8))
    assert raw[1, 3] == 15 and ds.images[0][1, 3] == 239  # round(15 * 255 / 16)


# --------------------------------------------------------------------------- mixing
def test_allocate_largest_remainder():
    assert allocate(10, [1, 1, 1]) == [4, 3, 3]
    assert allocate(7, [3, 1]) == [5, 2]  # 5.25, 1.75 -> 5, 2
    assert sum(allocate(1001, [0.2, 0.3, 0.5])) == 1001


def _colour_source(tmp_path, name, colour, n):
    root = tmp_path / name
    for i in range(n):
        save_image(root / f"{i}.png", colour, size=(8, 8))
        (root / f"{i}.txt").write_text(f"{name} {i}")
    return str(root)


def test_mixed_pairs_shares_and_coverage(tmp_path):
    a = _colour_source(tmp_path, "red", COLOURS["red"], 4)
    b = _colour_source(tmp_path, "blue", COLOURS["blue"], 12)
    mix = open_pairs([SourceConfig(path=a, weight=3), SourceConfig(path=b, weight=1)], TF, seed=1)
    assert isinstance(mix, MixedPairs) and len(mix) == 16
    seen = {}
    for epoch in range(3):
        mix.set_epoch(epoch)
        caps = [mix[i]["caption"] for i in range(len(mix))]
        reds = [c for c in caps if c.startswith("red")]
        assert len(reds) == 12  # 3/4 of 16 positions, though red has only 4 images
        assert {reds.count(f"red {i}") for i in range(4)} == {3}  # oversampled evenly: 3 passes
        blues = [c for c in caps if c.startswith("blue")]
        assert len(blues) == 4 and len(set(blues)) == 4  # undersampled: 4 of 12, no repeats
        seen[epoch] = set(blues)
    assert len(seen[0] | seen[1] | seen[2]) > 4  # a different part of the blue source each epoch
    assert all(colour_of(mix[i]["image"]) in ((255, 0, 0), (0, 0, 255)) for i in range(16))
    assert "label" not in mix[0]


def test_mixed_weights_validated(tmp_path):
    a = _colour_source(tmp_path, "red", COLOURS["red"], 2)
    with pytest.raises(ConfigError, match="weight"):
        open_pairs([SourceConfig(path=a, weight=0), SourceConfig(path=a)], TF)


def test_dataloader_workers_see_the_epoch(folder):
    ds = open_pairs(str(folder), TF, seed=3)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, persistent_workers=True)
    captions = []
    for epoch in range(12):
        ds.set_epoch(epoch)  # in the main process only: the shared counter reaches the worker
        batch = next(iter(loader))
        captions.append(batch["caption"][0])
        assert decode_skips(batch["skipped"]) == []
    expected = []
    for epoch in range(12):
        ds.set_epoch(epoch)
        expected.append(ds[0]["caption"])
    assert captions == expected and len(set(captions)) == 2


def test_sources_in_config_round_trip(tmp_path):
    from lipkit.config import from_dict, load_config, save_config, to_dict

    cfg = load_config("tuxpaint-lit")
    assert [(s.path, s.split, s.weight) for s in cfg.data.sources] == [("tuxpaint", "train", 1.0), ("openclipart", "", 1.0)]
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(str(tmp_path / "c.yaml")) == cfg
    assert from_dict(to_dict(cfg)).data.sources == cfg.data.sources
    with pytest.raises(ConfigError, match=r"unknown key 'data.sources\[0\].colour'"):
        from_dict({"data": {"sources": [{"path": "x", "colour": 1}]}})
    with pytest.raises(ConfigError, match=r"data.sources\[0\].format: expected one of"):
        from_dict({"data": {"sources": [{"path": "x", "format": "parquet"}]}})
