"""WebDataset shards: writing, streaming, splitting over ranks and workers, safety."""
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lipkit import distributed
from lipkit.cli import main
from lipkit.config import SourceConfig
from lipkit.data import DataSourceError, ImageTransform, open_pairs
from lipkit.data.pairs import decode_skips
from lipkit.data.shards import ShardStream, expand_pattern, shard_pattern, split_key, write_shards
from lipkit.data.stream import MixedStream

TF = ImageTransform(8)


def png_bytes(value: int, size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (value, 255 - value, 0)).save(buf, format="PNG")
    return buf.getvalue()


def samples(n: int, captions_per=1):
    for i in range(n):
        yield {"image_bytes": png_bytes(i % 256), "ext": "png",
               "captions": tuple(f"sample {i} caption {c}" for c in range(captions_per)), "label": i % 3}


@pytest.fixture
def shards(tmp_path):
    paths = write_shards(samples(50), tmp_path / "shards", shard_size=10)
    return tmp_path / "shards", paths


def captions_of(stream) -> list[str]:
    return [item["caption"] for item in stream]


def sample_ids(items) -> list[int]:
    return [int(c.split()[1]) for c in items]


def test_write_shards_layout(shards):
    folder, paths = shards
    assert [p.name for p in paths] == [f"shards-{k:06d}.tar" for k in range(5)]
    assert not list(folder.glob("*.tmp"))
    with tarfile.open(paths[1]) as tf:
        names = tf.getnames()
        assert sorted(names[:3]) == ["000000010.cls", "000000010.png", "000000010.txt"]
        assert tf.extractfile("000000010.txt").read() == b"sample 10 caption 0"
        assert tf.extractfile("000000010.cls").read() == b"1"
    assert shard_pattern(paths) == str(folder / "shards-{000000..000004}.tar")
    assert expand_pattern(shard_pattern(paths)) == [str(p) for p in paths]


def test_stream_reads_every_sample_once_and_reshuffles(shards):
    folder, paths = shards
    stream = open_pairs(shard_pattern(paths), TF, shuffle_buffer=8)
    assert isinstance(stream, ShardStream)
    stream.set_epoch(0)
    e0 = captions_of(stream)
    stream.set_epoch(1)
    e1 = captions_of(stream)
    assert sorted(sample_ids(e0)) == list(range(50)) and sorted(sample_ids(e1)) == list(range(50))
    assert e0 != e1 and sample_ids(e0) != list(range(50))  # shards and samples shuffled
    stream.set_epoch(0)
    assert captions_of(stream) == e0  # reproducible per (seed, epoch)
    item = next(iter(stream))
    assert item["image"].shape == (3, 8, 8) and "label" not in item and item["skipped"] == ""


def test_stream_moves_on_without_set_epoch(shards):
    stream = ShardStream(shard_pattern(shards[1]), TF)
    first, second = captions_of(stream), captions_of(stream)
    assert first != second and sorted(first) == sorted(second)


@pytest.mark.parametrize("world,workers", [(2, 1), (3, 2), (4, 2)])
def test_ranks_and_workers_partition_the_epoch(shards, monkeypatch, world, workers):
    """world x workers slots: more slots than the 5 shards (6, 8) falls back to splitting samples."""
    folder, paths = shards
    seen = []
    for rank in range(world):
        monkeypatch.setattr(distributed, "rank", lambda r=rank: r)
        monkeypatch.setattr(distributed, "world_size", lambda w=world: w)
        stream = ShardStream(shard_pattern(paths), TF, seed=5)
        stream.set_epoch(2)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
        seen += sample_ids(item["caption"] for item in loader)
    assert sorted(seen) == list(range(50))  # every sample, none twice


def test_labels_and_several_captions(tmp_path):
    paths = write_shards(samples(6, captions_per=3), tmp_path, shard_size=100)
    stream = ShardStream(str(paths[0]), TF, labels=True, shuffle=False)
    items = list(stream)
    assert [it["label"] for it in items] == [0, 1, 2, 0, 1, 2]
    assert all(it["caption"].startswith(f"sample {i} caption") for i, it in enumerate(items))
    picks = set()
    for e in range(20):
        stream.set_epoch(e)
        picks.add(next(iter(stream))["caption"])
    assert len(picks) == 3  # one caption per epoch, all of them used


def test_reads_shards_written_by_webdataset_and_agrees_with_it(tmp_path):
    import webdataset as wds

    path = tmp_path / "ext-000.tar"
    with wds.TarWriter(str(path)) as sink:
        for i in range(4):
            sink.write({"__key__": f"dir/s{i}", "jpg": png_bytes(10 * i), "json": {"caption": [f"json caption {i}"]}})
    ours = list(ShardStream(str(path), TF, shuffle=False))
    assert [it["caption"] for it in ours] == [f"json caption {i}" for i in range(4)]
    theirs = list(wds.WebDataset(str(path), shardshuffle=False).decode())
    assert [s["__key__"] for s in theirs] == [f"dir/s{i}" for i in range(4)]
    assert split_key("dir/s0.seg.png") == ("dir/s0", "seg.png")


def _tar_with(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_unsafe_member_names_are_refused(tmp_path):
    path = _tar_with(tmp_path / "evil.tar", [
        ("ok.png", png_bytes(1)), ("ok.txt", b"fine"),
        ("../escape.png", png_bytes(2)), ("../escape.txt", b"outside"),
        ("/abs/x.png", png_bytes(3)), ("/abs/x.txt", b"absolute"),
        ("a/../../b.png", png_bytes(4)), ("a/../../b.txt", b"dotdot"),
    ])
    items = list(ShardStream(str(path), TF, shuffle=False))
    assert [it["caption"] for it in items] == ["fine"]
    reasons = decode_skips(items[0]["skipped"])
    assert {r for _, r in reasons} == {"refused: member name contains '..'", "refused: absolute member name"}
    assert len(reasons) == 6 and any(w.endswith("../escape.png") for w, _ in reasons)
    assert not (tmp_path / "escape.png").exists()


def test_corrupt_samples_and_truncated_shard(tmp_path):
    good = write_shards(samples(4), tmp_path / "a", shard_size=100)[0]
    bad = _tar_with(tmp_path / "b.tar", [
        ("x.png", b"not a png"), ("x.txt", b"corrupt image"),
        ("y.png", png_bytes(5)), ("y.txt", b"  "),  # empty caption
        ("z.txt", b"no image at all"),
        ("w.png", png_bytes(7)), ("w.txt", b"the good one"),
    ])
    data = good.read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2 + 100])
    stream = ShardStream(f"{bad}::{tmp_path / 'cut.tar'}", TF, shuffle=False)
    items = list(stream)
    captions = [it["caption"] for it in items]
    assert "the good one" in captions and 1 <= len(captions) <= 3
    reasons = [r for it in items for _, r in decode_skips(it["skipped"])]
    assert any(r.startswith("cannot decode image") for r in reasons)
    assert "empty caption" in reasons and any(r.startswith("no image field") for r in reasons)
    assert any(r.startswith("shard is damaged") for r in reasons)


def test_missing_shard_is_one_line_error(tmp_path):
    with pytest.raises(DataSourceError, match=r"x-001\.tar: shard not found \(2 of 2 missing\)"):
        ShardStream(str(tmp_path / "x-{001..002}.tar"), TF)


def test_mixing_a_stream_with_a_map_source(shards, tmp_path):
    root = tmp_path / "folder"
    root.mkdir()
    for i in range(5):
        Image.new("RGB", (8, 8), (0, 0, 255)).save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"folder {i}")
    mix = open_pairs([SourceConfig(path=shard_pattern(shards[1]), weight=1), SourceConfig(path=str(root), weight=1)], TF)
    assert isinstance(mix, MixedStream)
    caps = captions_of(mix)
    shard_caps = [c for c in caps if c.startswith("sample")]
    folder_caps = [c for c in caps if c.startswith("folder")]
    assert sorted(sample_ids(shard_caps)) == list(range(50))  # the epoch ends once every source is read
    assert len(folder_caps) >= 5 and {int(c.split()[1]) for c in folder_caps} == set(range(5))


def test_cli_convert_folder_to_shards_and_back(tmp_path, capsys):
    root = tmp_path / "pairs"
    root.mkdir()
    for i in range(7):
        Image.fromarray(np.full((6, 9, 3), 30 * i, np.uint8)).save(root / f"p{i}.jpg")
        (root / f"p{i}.txt").write_text(f"picture {i}\nsecond caption {i}")
    (root / "broken.jpg").write_bytes(b"garbage")
    (root / "broken.txt").write_text("caption of garbage")
    out = tmp_path / "out"
    assert main(["data", "convert", str(root), "--to", "shards", str(out), "--shard-size", "3"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 7 samples in 3 shard(s)" in printed and "skipped 1 unusable" in printed
    skipped = json.loads((out / "shards-skipped.json").read_text())
    assert skipped[0]["where"].endswith("broken.jpg")
    stream = open_pairs(str(out / "shards-{000000..000002}.tar"), TF)
    pairs = {it["caption"].split()[-1] for it in stream}
    assert pairs == {str(i) for i in range(7)}
    with tarfile.open(out / "shards-000000.tar") as tf:
        assert tf.extractfile("000000000.jpg").read() == (root / "p0.jpg").read_bytes()  # original bytes
        assert tf.extractfile("000000000.txt").read() == b"picture 0\nsecond caption 0"
    assert main(["data", "convert", str(root), "--to", "shards", str(out)]) == 2  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err


# ---------------------------------------------------------------------------- indexing headers
def _tar(path: Path, members: list[tuple[str, bytes | None]], fmt=tarfile.USTAR_FORMAT) -> Path:
    """A tar of `members` (name, bytes; None: a folder), as `tarfile` writes it in `fmt`."""
    with tarfile.open(path, "w", format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


SHARD_MEMBERS = [("a", None), ("a/0001.png", b"\x89PNG" + bytes(700)), ("a/0001.cls", b"3"),
                 ("a/0001.txt", b"a cat"), ("0002.jpg", bytes(1024)), ("0002.json", b'{"caption": "x"}'),
                 ("deep/" * 30 + "0003.png", bytes(10)), ("../escape.png", bytes(5))]


def test_plain_shards_are_indexed_from_their_headers_as_tarfile_reads_them(tmp_path):
    from lipkit.data.shard_index import _index_with_tarfile, index_shard
    from lipkit.data.tar_headers import plain_members

    shard = _tar(tmp_path / "s.tar", SHARD_MEMBERS)  # a 150-byte name fits ustar's prefix field
    with open(shard, "rb") as f:
        members = plain_members(f)
    assert members is not None and [m.name for m in members] == [n for n, _ in SHARD_MEMBERS]
    with tarfile.open(shard) as tf:
        assert [(m.offset_data, m.size) for m in members if m.is_file] == \
            [(t.offset_data, t.size) for t in tf.getmembers() if t.isfile()]
    assert index_shard(str(shard)) == _index_with_tarfile(str(shard))
    samples, problems = index_shard(str(shard))
    assert [s.key for s in samples] == ["a/0001", "0002", "deep/" * 30 + "0003"]
    assert samples[0].fields == {"cls": b"3", "txt": b"a cat"} and problems[0][0].endswith("../escape.png")


def test_other_tars_are_left_to_tarfile(tmp_path):
    from lipkit.data.shard_index import _index_with_tarfile, index_shard
    from lipkit.data.tar_headers import plain_members

    long_name = [("x" * 120 + ".png", bytes(10)), ("x" * 120 + ".cls", b"1")]  # no prefix split: extended headers
    gnu = _tar(tmp_path / "gnu.tar", long_name, tarfile.GNU_FORMAT)
    whole = _tar(tmp_path / "whole.tar", SHARD_MEMBERS[1:4])
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[:1200])  # inside the first image's data
    for path in (gnu, cut):
        with open(path, "rb") as f:
            assert plain_members(f) is None, path.name
        assert index_shard(str(path)) == _index_with_tarfile(str(path))


def test_pax_paths_and_sizes_are_followed(tmp_path):
    from lipkit.data.shard_index import _index_with_tarfile, index_shard
    from lipkit.data.tar_headers import plain_members

    members = [("x" * 120 + ".png", bytes(700)), ("x" * 120 + ".cls", b"1"), ("é/0002.txt", "ünïcode".encode())]
    pax = _tar(tmp_path / "pax.tar", members, tarfile.PAX_FORMAT)
    with open(pax, "rb") as f:
        found = plain_members(f)
    assert found is not None and [m.name for m in found] == [n for n, _ in members]
    assert index_shard(str(pax)) == _index_with_tarfile(str(pax))
    assert [s.key for s in index_shard(str(pax))[0]] == ["x" * 120, "é/0002"]
