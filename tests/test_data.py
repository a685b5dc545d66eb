import gzip
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from lipkit.config import ConfigError, DataConfig
from lipkit.data import (
    DataSourceError,
    FashionMNISTPairs,
    build_train_dataset,
    cache_dir,
    debian,
    fashion_mnist,
    fashion_mnist_prompts,
    load_fashion_mnist,
)
from lipkit.data.captions import fill, template_index
from lipkit.data.idx import read_idx

FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]
TRAIN_TEMPLATES = DataConfig().caption_templates


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, extra: bytes = b"") -> Path:
    array = np.asarray(array, dtype=np.uint8)
    magic = (0x08 << 8) | array.ndim if magic is None else magic
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes() + extra
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


# --------------------------------------------------------------------------- IDX parser
def test_read_idx_images_and_labels(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28) % 256
    labels = np.array([7, 0, 9])
    got = read_idx(write_idx(tmp_path / "img.gz", images), ndim=3)
    assert got.dtype == np.uint8 and got.shape == (3, 28, 28)
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "lab.gz", labels), ndim=1), labels)
    # an uncompressed file reads the same
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "lab.idx", labels), ndim=1), labels)


def test_read_idx_magic_is_exact(tmp_path):
    assert struct.unpack(">I", gzip.decompress(write_idx(tmp_path / "a.gz", np.zeros((2, 2, 2))).read_bytes())[:4])[0] == 0x803
    assert struct.unpack(">I", gzip.decompress(write_idx(tmp_path / "b.gz", np.zeros(2)).read_bytes())[:4])[0] == 0x801


@pytest.mark.parametrize("magic", [0x00000801, 0x00000903, 0x01000803, 0x12345678])
def test_read_idx_wrong_magic_names_file(tmp_path, magic):
    path = write_idx(tmp_path / "bad-images.gz", np.zeros((2, 28, 28)), magic=magic)
    with pytest.raises(DataSourceError, match="bad-images.gz") as e:
        read_idx(path, ndim=3)
    assert "magic" in str(e.value)


def test_read_idx_labels_file_as_images_fails(tmp_path):
    path = write_idx(tmp_path / "labels.gz", np.zeros(10))
    with pytest.raises(DataSourceError, match="labels.gz"):
        read_idx(path, ndim=3)


@pytest.mark.parametrize("extra", [b"\x00", b"\x00" * 100])
def test_read_idx_size_mismatch_names_file(tmp_path, extra):
    path = write_idx(tmp_path / "long.gz", np.zeros((2, 28, 28)), extra=extra)
    with pytest.raises(DataSourceError, match="long.gz"):
        read_idx(path, ndim=3)


def test_read_idx_truncated_data_names_file(tmp_path):
    path = tmp_path / "short.gz"
    full = gzip.decompress(write_idx(path, np.zeros((2, 28, 28))).read_bytes())
    path.write_bytes(gzip.compress(full[:-5]))
    with pytest.raises(DataSourceError, match="short.gz"):
        read_idx(path, ndim=3)
    path.write_bytes(gzip.compress(full[:6]))  # not even a whole header
    with pytest.raises(DataSourceError, match="short.gz"):
        read_idx(path, ndim=3)


def test_read_idx_corrupt_gzip_and_missing_file_name_file(tmp_path):
    (tmp_path / "junk.gz").write_bytes(b"this is not gzip")
    with pytest.raises(DataSourceError, match="junk.gz"):
        read_idx(tmp_path / "junk.gz", ndim=1)
    with pytest.raises(DataSourceError, match="absent.gz"):
        read_idx(tmp_path / "absent.gz", ndim=1)


# --------------------------------------------------------------------------- cache, fetch, errors
def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LIPKIT_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LIPKIT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "lipkit"


def _write_fake_fashion(folder: Path, n_train=20, n_test=10) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_files_placed_by_hand_are_used_without_fetching(monkeypatch, tmp_path):
    monkeypatch.setenv("LIPKIT_CACHE", str(tmp_path))
    _write_fake_fashion(tmp_path / "fashion-mnist", n_train=20, n_test=10)

    def no_fetch(*a, **k):
        raise AssertionError("must not fetch when the files are present")

    monkeypatch.setattr(fashion_mnist, "fetch_from_debian", no_fetch)
    images, labels = load_fashion_mnist("train")
    assert images.shape == (20, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [i % 10 for i in range(20)]
    assert load_fashion_mnist("test")[0].shape == (10, 28, 28)
    ds = FashionMNISTPairs("test", templates=["x {}"])
    assert len(ds) == 10 and ds.images_tensor().shape == (10, 1, 28, 28)


def test_inconsistent_files_by_hand_are_named(monkeypatch, tmp_path):
    monkeypatch.setenv("LIPKIT_CACHE", str(tmp_path))
    folder = tmp_path / "fashion-mnist"
    _write_fake_fashion(folder, n_train=20, n_test=10)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(9) % 10)
    with pytest.raises(DataSourceError, match="10 images but 9 labels"):
        load_fashion_mnist("test")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(20, 10))
    with pytest.raises(DataSourceError, match="train-labels-idx1-ubyte.gz.*out of range"):
        load_fashion_mnist("train")


def test_only_missing_files_are_fetched(monkeypatch, tmp_path):
    monkeypatch.setenv("LIPKIT_CACHE", str(tmp_path))
    _write_fake_fashion(tmp_path / "fashion-mnist")
    (tmp_path / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    asked = {}

    def fake_fetch(package, members, dest):
        asked.update(members)
        write_idx(dest / "t10k-labels-idx1-ubyte.gz", np.arange(10) % 10)

    monkeypatch.setattr(fashion_mnist, "fetch_from_debian", fake_fetch)
    assert load_fashion_mnist("test")[1].shape == (10,)
    assert asked == {"t10k-labels-idx1-ubyte.gz": "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"}


def _assert_manual_instructions(message: str, folder: Path) -> None:
    for name in FILES:
        assert name in message
    assert str(folder) in message
    assert "github.com/zalandoresearch/fashion-mnist" in message
    assert "LIPKIT_CACHE" in message


def test_no_apt_get_gives_manual_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("LIPKIT_CACHE", str(tmp_path / "cache"))
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    with pytest.raises(DataSourceError) as e:
        load_fashion_mnist("train")
    _assert_manual_instructions(str(e.value), tmp_path / "cache" / "fashion-mnist")
    assert "apt-get" in str(e.value)  # the cause is stated too


def test_apt_get_failure_gives_manual_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("LIPKIT_CACHE", str(tmp_path))

    def failing_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 100, stdout="", stderr="E: Unable to locate package dataset-fashion-mnist\n")

    monkeypatch.setattr(debian.subprocess, "run", failing_run)
    with pytest.raises(DataSourceError, match="Unable to locate package") as e:
        FashionMNISTPairs("test")
    _assert_manual_instructions(str(e.value), tmp_path / "fashion-mnist")
    folder = tmp_path / "fashion-mnist"
    assert not folder.exists() or not any(folder.iterdir())  # nothing half-written


def test_fetch_from_debian_real(tmp_path):
    """The real fetch path (the session cache may hide it): one small member, atomically placed."""
    member = "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"
    debian.fetch_from_debian("dataset-fashion-mnist", {"labels.gz": member}, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["labels.gz"]  # no temp files left behind
    labels = read_idx(tmp_path / "labels.gz", ndim=1)
    assert labels.shape == (10000,) and np.bincount(labels).tolist() == [1000] * 10


# --------------------------------------------------------------------------- the real data set
@pytest.fixture(scope="module")
def real():
    """Real Fashion-MNIST from the user's cache, fetched from Debian on first use."""
    return {split: load_fashion_mnist(split) for split in ("train", "test")}


def test_real_shapes_counts_and_pixel_mean(real):
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = real[split]
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int64
        assert np.bincount(labels, minlength=10).tolist() == [n // 10] * 10
    assert abs(real["train"][0].mean() - 0.2860 * 255) < 0.05  # 72.940 measured
    assert real["train"][1][:5].tolist() == [9, 0, 0, 3, 0]  # the file's first labels


def test_real_arrays_are_parsed_once_and_read_only(real):
    assert load_fashion_mnist("train")[0] is real["train"][0]
    assert not real["train"][0].flags.writeable and not real["train"][1].flags.writeable


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("val")
    with pytest.raises(ValueError, match="split"):
        FashionMNISTPairs("validation", templates=["{}"])


# --------------------------------------------------------------------------- prompts
def test_prompts_file():
    p = fashion_mnist_prompts()
    assert p.labels[0] == "T-shirt/top" and p.labels[9] == "Ankle boot" and len(p.labels) == 10
    assert p.class_names == ["t-shirt", "pair of trousers", "pullover", "dress", "coat",
                             "sandal", "shirt", "sneaker", "bag", "ankle boot"]
    assert len(p.templates) >= 5 and all(t.count("{}") == 1 for t in p.templates)
    assert not set(p.templates) & set(TRAIN_TEMPLATES), "evaluation templates must be unseen in training"


def test_prompts_file_replaceable_and_validated(tmp_path):
    good = tmp_path / "p.json"
    good.write_text('{"labels": %s, "class_names": %s, "templates": ["{} here"]}' % (
        str([f"L{i}" for i in range(10)]).replace("'", '"'), str([f"c{i}" for i in range(10)]).replace("'", '"')))
    assert fashion_mnist_prompts(good).templates == ["{} here"]
    bad = tmp_path / "bad.json"
    bad.write_text(good.read_text().replace("{} here", "no placeholder"))
    with pytest.raises(DataSourceError, match="bad.json"):
        fashion_mnist_prompts(bad)
    (tmp_path / "short.json").write_text('{"labels": [], "class_names": [], "templates": ["{}"]}')
    with pytest.raises(DataSourceError, match="short.json"):
        fashion_mnist_prompts(tmp_path / "short.json")


# --------------------------------------------------------------------------- pairs data set
@pytest.fixture(scope="module")
def pairs(real):
    return FashionMNISTPairs("train", templates=TRAIN_TEMPLATES, seed=0)


def _captions(ds, n=500):
    return [ds[i]["caption"] for i in range(n)]


def test_item_types_and_shapes(pairs):
    item = pairs[0]
    image, caption, label = item["image"], item["caption"], item["label"]
    assert isinstance(image, torch.Tensor) and image.dtype == torch.float32 and image.shape == (1, 28, 28)
    assert isinstance(caption, str) and isinstance(label, int) and label == 9
    assert len(pairs) == 60000


def test_captions_match_label_and_training_templates(pairs):
    names = fashion_mnist_prompts().class_names
    pairs.set_epoch(0)
    for i in range(0, 60000, 97):
        caption, label = pairs[i]["caption"], pairs[i]["label"]
        assert caption in {fill(t, names[label]) for t in TRAIN_TEMPLATES}, (i, caption, label)
        assert names[label] in caption
    # every training template gets used, roughly uniformly
    used = [next(t for t in TRAIN_TEMPLATES if fill(t, names[pairs[i]["label"]]) == pairs[i]["caption"]) for i in range(3000)]
    counts = [used.count(t) for t in TRAIN_TEMPLATES]
    assert min(counts) > 3000 / len(TRAIN_TEMPLATES) * 0.8, counts


def test_captions_deterministic_per_seed_and_epoch(pairs):
    other = FashionMNISTPairs("train", templates=TRAIN_TEMPLATES, seed=0)
    pairs.set_epoch(0)
    e0 = _captions(pairs)
    assert e0 == _captions(other)
    assert [pairs[i]["caption"] for i in reversed(range(500))][::-1] == e0  # access order does not matter
    pairs.set_epoch(1)
    e1 = _captions(pairs)
    other.set_epoch(1)
    assert e1 == _captions(other)
    changed = sum(a != b for a, b in zip(e0, e1))
    assert changed > 0.7 * 500, changed  # ~5/6 expected with 6 templates
    pairs.set_epoch(0)
    assert _captions(pairs) == e0
    reseeded = FashionMNISTPairs("train", templates=TRAIN_TEMPLATES, seed=1)
    assert sum(a != b for a, b in zip(e0, _captions(reseeded))) > 0.7 * 500


def test_caption_independent_of_limit(pairs):
    pairs.set_epoch(3)
    small = FashionMNISTPairs("train", templates=TRAIN_TEMPLATES, limit=100)
    small.set_epoch(3)
    assert len(small) == 100 and _captions(small, 100) == _captions(pairs, 100)
    pairs.set_epoch(0)


def test_template_index_spread():
    picks = [template_index(0, 0, i, 7) for i in range(7000)]
    assert set(picks) == set(range(7)) and min(picks.count(k) for k in range(7)) > 800


def test_normalisation_by_hand(pairs, real):
    raw = real["train"][0]
    i, r, c = 123, 14, 10
    assert raw[i, r, c] not in (0, 255)
    expected = (raw[i, r, c] / 255.0 - 0.2860) / 0.3530
    assert pairs[i]["image"][0, r, c].item() == pytest.approx(expected, abs=1e-6)
    assert pairs[i]["image"][0, 0, 0].item() == pytest.approx((raw[i, 0, 0] / 255.0 - 0.2860) / 0.3530, abs=1e-6)


def test_batched_accessors(real):
    ds = FashionMNISTPairs("test", templates=TRAIN_TEMPLATES)
    images = ds.images_tensor()
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.float32
    assert torch.equal(images[42], ds[42]["image"])
    assert abs(images.mean().item()) < 0.05  # normalised by the train statistics
    assert ds.labels.dtype == torch.long and ds.labels.shape == (10000,)
    assert ds.labels.tolist() == real["test"][1].tolist()
    assert ds[-1]["label"] == ds.labels[-1].item() and ds[-1]["index"] == len(ds) - 1
    with pytest.raises(IndexError):
        ds[10000]


def test_default_templates_are_evaluation_ones(real):
    ds = FashionMNISTPairs("test")
    p = fashion_mnist_prompts()
    assert ds.templates == p.templates
    assert len(ds.possible_captions()) == len(p.templates) * 10


def test_dataloader_batches(pairs):
    loader = torch.utils.data.DataLoader(pairs, batch_size=8, shuffle=False)
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 1, 28, 28) and len(batch["caption"]) == 8
    assert batch["label"].dtype == torch.long and batch["index"].tolist() == list(range(8))


def test_bad_templates_and_limit(real):
    with pytest.raises(ValueError, match="exactly one"):
        FashionMNISTPairs("test", templates=["no placeholder"])
    with pytest.raises(ValueError, match="at least one"):
        FashionMNISTPairs("test", templates=[])
    with pytest.raises(ValueError, match="limit"):
        FashionMNISTPairs("test", limit=-1)


# --------------------------------------------------------------------------- build_train_dataset
def test_build_train_dataset(real):
    ds = build_train_dataset(DataConfig(train_limit=1000))
    assert len(ds) == 1000 and ds.split == "train" and ds.templates == TRAIN_TEMPLATES
    assert len(build_train_dataset(DataConfig())) == 60000
    custom = build_train_dataset(DataConfig(caption_templates=["a {} drawn"], train_limit=5))
    assert custom[0]["caption"] == "a ankle boot drawn"


def test_build_train_dataset_errors():
    with pytest.raises(ConfigError, match="data.source"):
        build_train_dataset(DataConfig(source="cifar"))
    with pytest.raises(ConfigError, match="data.caption_templates"):
        build_train_dataset(DataConfig(caption_templates=["nope"]))
    with pytest.raises(ConfigError, match="data.train_limit"):
        build_train_dataset(DataConfig(train_limit=-5))


def test_batched_items_equal_single_items(pairs):
    pairs.set_epoch(3)
    indices = [0, 17, 59_999, -2]
    for single, batched in zip([pairs[i] for i in indices], pairs.__getitems__(indices)):
        assert torch.equal(single["image"], batched["image"])
        assert (single["caption"], single["label"], single["index"]) == \
               (batched["caption"], batched["label"], batched["index"])
    with pytest.raises(IndexError, match="60000"):
        pairs.__getitems__([0, 60_000])
