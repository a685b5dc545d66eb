"""Bad samples: skipped, counted, logged once with the path, reported, fatal only above the limit."""
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from lipkit.data import (
    BadSampleError,
    ImageTransform,
    SkipTracker,
    TooManyBadSamplesError,
    TrackedBatches,
    open_image,
    open_pairs,
)
from lipkit.data.pairs import decode_skips, encode_skips

TF = ImageTransform(8)


def write_pairs(root, n_good=6, corrupt=(), truncated=(), missing_txt=()):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_good):
        Image.new("RGB", (10, 10), (20 * i, 0, 0)).save(root / f"{i:02d}.png")
        (root / f"{i:02d}.txt").write_text(f"image {i}")
    for name in corrupt:
        (root / f"{name}.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
        (root / f"{name}.txt").write_text(f"caption of {name}")
    for name in truncated:
        Image.new("RGB", (64, 64), (0, 200, 0)).save(root / f"{name}.png")
        data = (root / f"{name}.png").read_bytes()
        (root / f"{name}.png").write_bytes(data[: len(data) // 2])
        (root / f"{name}.txt").write_text(f"caption of {name}")
    return root


# --------------------------------------------------------------------------- single images
def test_open_image_errors_name_the_file(tmp_path):
    root = write_pairs(tmp_path / "d", n_good=0, corrupt=["bad"], truncated=["cut"])
    with pytest.raises(BadSampleError, match=r"bad\.png: cannot decode image"):
        open_image(root / "bad.png")
    with pytest.raises(BadSampleError, match=r"cut\.png: cannot decode image"):
        open_image(root / "cut.png")
    with pytest.raises(BadSampleError, match=r"gone\.png: file not found"):
        open_image(root / "gone.png")


def test_pixel_limit_refuses_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (300, 200)).save(path)

    def no_decoding(self, *a, **k):
        raise AssertionError("pixels must not be decoded")

    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(BadSampleError, match=r"big\.png: image is 300x200 = 60000 pixels, over the limit of 59999"):
        open_image(path, max_pixels=59_999)


def test_decompression_bomb_file(tmp_path):
    """A real bomb: 25 megapixels of zeros in a file of a few kB."""
    path = tmp_path / "bomb.png"
    Image.new("1", (5000, 5000)).save(path, optimize=True)
    assert path.stat().st_size < 20_000
    with pytest.raises(BadSampleError, match="over the limit"):
        open_image(path, max_pixels=1_000_000)
    assert open_image(path, max_pixels=25_000_000, mode="L").size == (5000, 5000)


def test_transparency_is_flattened_onto_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red; the rest fully transparent black
    rgba[1, 1] = (0, 0, 255, 128)  # half-transparent blue
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    out = np.asarray(open_image(tmp_path / "cut.png"))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1].tolist() == [255, 255, 255]  # transparent -> background, not black
    assert out[1, 1].tolist() == [127, 127, 255]  # alpha 128/255 blend of blue over white
    la = Image.fromarray(np.array([[[10, 0], [10, 255]]], np.uint8), "LA")
    la.save(tmp_path / "la.png")
    assert np.asarray(open_image(tmp_path / "la.png", mode="L")).tolist() == [[255, 10]]


# --------------------------------------------------------------------------- datasets
def test_bad_images_are_replaced_and_reported(tmp_path):
    root = write_pairs(tmp_path / "d", n_good=6, corrupt=["x_bad"], truncated=["y_cut"])
    ds = open_pairs(str(root), TF, seed=0)
    assert len(ds) == 8  # the files exist and have captions: found bad only when decoded
    items = [ds[i] for i in range(len(ds))]
    bad_positions = [i for i, r in enumerate(ds.records) if "x_bad" in r.image or "y_cut" in r.image]
    for i, item in enumerate(items):
        skips = decode_skips(item["skipped"])
        if i in bad_positions:
            assert len(skips) >= 1 and skips[0][0] == ds.records[i].image
            assert item["caption"].startswith("image ")  # a good replacement was served
            assert item["image"].shape == (3, 8, 8)
        else:
            assert skips == []


def test_all_bad_is_one_clear_error(tmp_path):
    root = write_pairs(tmp_path / "d", n_good=0, corrupt=["a", "b"])
    ds = open_pairs(str(root), TF)
    with pytest.raises(BadSampleError, match="samples in a row are unusable"):
        ds[0]


def test_tracker_counts_logs_once_and_reports(tmp_path, caplog):
    report = tmp_path / "run" / "data_report.json"
    with caplog.at_level(logging.WARNING, logger="lipkit.data"):
        tracker = SkipTracker(0.5, total=10, report=report, initial=[("f.png", "no caption file f.txt")])
    batch = {"image": torch.zeros(4, 3, 8, 8), "skipped": [encode_skips([("a.png", "cannot decode")]), "", "", ""]}
    with caplog.at_level(logging.WARNING, logger="lipkit.data"):
        out = tracker.update(batch)
        tracker.update({"image": torch.zeros(4, 3, 8, 8), "skipped": [encode_skips([("a.png", "cannot decode")])] + [""] * 3})
    assert "skipped" not in out and out["image"].shape[0] == 4
    # each once, with the path
    assert [r.getMessage() for r in caplog.records] == ["skipped f.png: no caption file f.txt", "skipped a.png: cannot decode"]
    data = json.loads(report.read_text())
    assert data["bad_samples"] == 2 and data["dataset_size"] == 10 and data["bad_fraction"] == pytest.approx(0.2)
    assert {s["where"] for s in data["skipped"]} == {"f.png", "a.png"}


def test_tracker_stops_above_the_limit(tmp_path):
    tracker = SkipTracker(0.25, total=8)
    tracker.update({"image": torch.zeros(2, 1), "skipped": [encode_skips([("a", "x"), ("b", "y")]), ""]})  # 2/8 = 0.25: fine
    with pytest.raises(TooManyBadSamplesError, match=r"3 of 8 samples \(37.5%\) are unusable, more than data.max_bad_fraction 0.25; first: a: x"):
        tracker.update({"image": torch.zeros(1, 1), "skipped": [encode_skips([("c", "z")])]})


def _batch(good: int, bad: list[str] = ()) -> dict:
    return {"image": torch.zeros(good, 1), "skipped": [encode_skips([(w, "x") for w in bad])] + [""] * (good - 1)}


def test_tracker_on_a_stream_counts_from_the_first_sample_over_at_least_min_seen():
    tracker = SkipTracker(0.1, total=None, min_seen=20)
    tracker.update(_batch(1, ["a"]))  # 1 of 2 read, but judged over 20: 5%
    tracker.update(_batch(1, ["b"]))  # 2 of 4: 10%, not more than the limit
    with pytest.raises(TooManyBadSamplesError, match=r"^data: 3 of the first 6 samples read \(50.0%\) are unusable"):
        tracker.update(_batch(1, ["c"]))  # 3 of 20 at the least: the stop at 20 samples is certain already
    tracker = SkipTracker(0.1, total=None, min_seen=20)
    tracker.update(_batch(1, ["a"]))
    tracker.update(_batch(17))
    with pytest.raises(TooManyBadSamplesError, match="3 of the first 22 samples read"):  # 19 good + 3 bad
        tracker.update(_batch(1, ["b", "c"]))


def test_early_bad_samples_on_a_stream_cannot_slip_through():
    # 30 bad samples first, then only good ones: the old rule waited for 100 samples and then
    # looked again only when a new bad one came, which never happened
    tracker = SkipTracker(0.01, total=None, min_seen=100)
    with pytest.raises(TooManyBadSamplesError, match="30 of the first 32 samples read"):
        tracker.update(_batch(2, [f"bad{i}" for i in range(30)]))


def test_the_end_of_an_epoch_judges_a_stream_shorter_than_min_seen():
    tracker = SkipTracker(0.05, total=None, min_seen=100)
    tracker.update(_batch(25, ["a", "b"]))
    tracker.update(_batch(25, ["c"]))  # 3 of at least 100: 3%
    with pytest.raises(TooManyBadSamplesError, match=r"3 of 53 samples \(5.7%\) are unusable"):
        tracker.end_epoch()  # the epoch held 53 samples
    tracker = SkipTracker(0.05, total=None, min_seen=100)
    tracker.update(_batch(97, ["a", "b"]))
    tracker.end_epoch()  # 2 of 99: fine, and 99 is the stream's size from now on
    assert tracker.total == 99 and tracker.summary()["dataset_size"] == 99


class _Epochs:
    """Batches with a position, like the trainer's BatchStream: epoch e is `batches[e]`."""

    def __init__(self, batches):
        self.flat = [(e, b) for e, epoch in enumerate(batches) for b in epoch]
        self.i = 0

    def __next__(self):
        epoch, batch = self.flat[self.i]
        self.i += 1
        return batch

    def position(self):
        return {"epoch": self.flat[self.i][0] if self.i < len(self.flat) else self.flat[-1][0] + 1}


def test_tracked_batches_tell_the_tracker_where_epochs_end():
    batches = TrackedBatches(_Epochs([[_batch(10, ["a"]), _batch(9)], [_batch(10)]]),
                             SkipTracker(0.04, total=None, min_seen=100))
    next(batches)
    with pytest.raises(TooManyBadSamplesError, match="1 of 20 samples"):  # 5% of the first epoch's 20
        next(batches)


def test_tracked_batches_through_a_dataloader(tmp_path):
    root = write_pairs(tmp_path / "d", n_good=6, corrupt=["x_bad"])
    ds = open_pairs(str(root), TF)
    loader = torch.utils.data.DataLoader(ds, batch_size=7, num_workers=1)
    tracker = SkipTracker(0.2, total=len(ds))
    batches = TrackedBatches(iter(loader), tracker)
    batch = next(batches)
    assert batch["image"].shape == (7, 3, 8, 8) and "skipped" not in batch
    assert list(tracker.bad) == [str(root / "x_bad.png")]
    tracker_strict = SkipTracker(0.1, total=len(ds))
    with pytest.raises(TooManyBadSamplesError, match="x_bad.png"):
        next(TrackedBatches(iter(loader), tracker_strict))


class _Stream:
    """A stream's batches with a BatchStream position: after a batch that opens epoch e the
    position is (e, samples of e so far); `start` resumes mid-epoch."""

    def __init__(self, epochs, start=(0, 0)):
        self.flat = [(e, b) for e, epoch in enumerate(epochs) for b in epoch][start[1]:]
        self.epoch, self.samples = start[0], 0
        self.start_samples = sum(len(b["image"]) for _, b in
                                 [(e, b) for e, epoch in enumerate(epochs) for b in epoch][:start[1]])
        self.samples = self.start_samples

    def __next__(self):
        epoch, batch = self.flat.pop(0)
        if epoch != self.epoch:
            self.epoch, self.samples = epoch, 0
        self.samples += len(batch["image"])
        return batch

    def position(self):
        return {"epoch": self.epoch, "samples_in_epoch": self.samples}


def test_a_streams_size_is_its_first_whole_epoch_not_one_begun_before_a_resume():
    def epochs():  # fresh batches for each stream (the tracker takes "skipped" out of a batch)
        return [[_batch(10), _batch(10)], [_batch(10, ["x"]), _batch(9)], [_batch(10)]]

    batches = TrackedBatches(_Stream(epochs()), SkipTracker(0.5, total=None, min_seen=1))
    for _ in range(3):  # the third batch opens epoch 1: epoch 0 held the 20 samples before it
        next(batches)
    assert batches.tracker.total == 20
    # resumed after the first batch of epoch 0: that epoch is not whole here, epoch 1 is
    resumed = TrackedBatches(_Stream(epochs(), start=(0, 1)), SkipTracker(0.5, total=None, min_seen=1))
    for _ in range(3):
        next(resumed)
    assert resumed.tracker.total is None  # not the 10 samples of epoch 0 read after the resume
    next(resumed)  # opens epoch 2: epoch 1 held 20 samples, one of them unusable
    assert resumed.tracker.total == 20
