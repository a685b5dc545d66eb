"""Data that is lost, mangled or miscounted no more: `data convert` validates the source before it
replaces anything and never reads and writes the same shards; WebDataset sources convert; text is
UTF-8 or refused by name; and a stream with too many bad samples stops the run."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from lipkit.cli import main
from lipkit.config import load_config
from lipkit.data import DataSourceError, ImageTransform, TooManyBadSamplesError, open_pairs
from lipkit.data.pairs import decode_skips
from lipkit.data.shards import write_shards
from lipkit.train import train

TF = ImageTransform(8)


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (value, 255 - value, 0)).save(buf, format="PNG")
    return buf.getvalue()


def _folder(root: Path, n: int = 4) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"p{i}.png").write_bytes(_png(40 * i))
        (root / f"p{i}.txt").write_text(f"picture {i}", encoding="utf-8")
    return root


def _shard_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _tar_captions(shard: Path) -> list[str]:
    with tarfile.open(shard) as tf:
        return [tf.extractfile(m).read().decode("utf-8") for m in tf.getmembers() if m.name.endswith(".txt")]


def _convert(src, out: Path, *extra: str) -> int:
    return main(["data", "convert", str(src), "--to", "shards", str(out), *extra])


# --------------------------------------------------------------------------- convert loses nothing
@pytest.fixture
def converted(tmp_path, capsys) -> Path:
    """out/: 4 pictures converted into shards-000000.tar and shards-000001.tar."""
    out = tmp_path / "out"
    assert _convert(_folder(tmp_path / "pairs"), out, "--shard-size", "2") == 0
    capsys.readouterr()
    return out


def test_convert_overwrite_with_a_mistyped_source_keeps_the_old_shards(converted, tmp_path, capsys):
    before = _shard_files(converted)
    assert _convert(tmp_path / "pairz.csv", converted, "--overwrite") == 2
    assert "pairz.csv: cannot open (No such file or directory)" in capsys.readouterr().err
    assert _shard_files(converted) == before


def test_convert_refuses_to_write_its_input(converted, capsys):
    out, before = converted, _shard_files(converted)
    assert _convert(out / "shards-{000000..000001}.tar", out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lipkit: error: {out}: the output (shards-NNNNNN.tar) would replace the input shard ")
    assert _shard_files(out) == before
    # the same folder under another prefix is fine, and reads lipkit's own shards
    assert _convert(out / "shards-{000000..000001}.tar", out, "--prefix", "copy") == 0
    assert "wrote 4 samples in 1 shard(s)" in capsys.readouterr().out
    assert sorted(_tar_captions(out / "copy-000000.tar")) == [f"picture {i}" for i in range(4)]


def test_convert_overwrite_replaces_the_old_shards_only_once_the_new_ones_are_complete(tmp_path, monkeypatch):
    import lipkit.data.convert as convert

    out = tmp_path / "out"
    assert _convert(_folder(tmp_path / "pairs"), out, "--shard-size", "1") == 0  # 4 shards
    before = _shard_files(out)
    real = convert.write_shards

    def dies_after_two(samples, *args, **kwargs):
        return real((s for i, s in enumerate(samples) if i < 2 or 1 / 0), *args, **kwargs)

    monkeypatch.setattr(convert, "write_shards", dies_after_two)
    with pytest.raises(ZeroDivisionError):
        _convert(tmp_path / "pairs", out, "--shard-size", "1", "--overwrite")
    assert _shard_files(out) == before and not [p for p in out.iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(convert, "write_shards", real)
    assert _convert(tmp_path / "pairs", out, "--shard-size", "3", "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["shards-000000.tar", "shards-000001.tar"]


def test_convert_from_webdataset_shards_keeps_every_caption_and_label(tmp_path, capsys):
    samples = [{"image_bytes": _png(i), "ext": "png", "captions": (f"first {i}", f"second {i}"), "label": i}
               for i in range(3)]
    write_shards(iter(samples), tmp_path / "in", shard_size=2)
    assert _convert(tmp_path / "in" / "shards-{000000..000001}.tar", tmp_path / "out") == 0
    assert "wrote 3 samples in 1 shard(s)" in capsys.readouterr().out
    assert _tar_captions(tmp_path / "out" / "shards-000000.tar") == [f"first {i}\nsecond {i}" for i in range(3)]
    with tarfile.open(tmp_path / "out" / "shards-000000.tar") as tf:
        assert [tf.extractfile(m).read() for m in tf.getmembers() if m.name.endswith(".cls")] == [b"0", b"1", b"2"]


# --------------------------------------------------------------------------- UTF-8 or refused by name
def _table(path: Path, rows: list[str], encoding: str, bom: bytes = b"") -> Path:
    path.write_bytes(bom + "\n".join(rows).encode(encoding) + b"\n")
    return path


@pytest.mark.parametrize("name, rows, where", [
    ("pairs.csv", ["image,caption", "p0.png,a plain caption", "p1.png,un café crème"], "3:14"),
    ("pairs.jsonl", ['{"image": "p0.png", "caption": "plain"}', '{"image": "p1.png", "caption": "café crème"}'], "2:36"),
])
def test_a_latin1_table_stops_naming_file_and_line_in_convert_and_train(tmp_path, name, rows, where, capsys):
    _folder(tmp_path / "d")
    table = _table(tmp_path / "d" / name, rows, "latin-1")
    with pytest.raises(DataSourceError, match=rf"^{table}:{where}: not UTF-8 text \(byte 0xE9\)"):
        open_pairs(str(table), TF)
    assert _convert(table, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lipkit: error: {table}:{where}: not UTF-8") and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert main(["train", "--config", "fashion-tiny", f"--set=data.source={table}", "--set=data.image_mean=[0.5]",
                 "--set=data.image_std=[0.5]", "--out", str(tmp_path / "run")]) == 2
    assert f"{table}:{where}: not UTF-8" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_utf8_with_a_byte_order_mark_is_read(tmp_path):
    _folder(tmp_path / "d")
    table = _table(tmp_path / "d" / "pairs.csv", ["image,caption", "p1.png,un café crème"], "utf-8", bom=b"\xef\xbb\xbf")
    assert open_pairs(str(table), TF).records[0].captions == ("un café crème",)


def test_a_latin1_caption_file_is_a_bad_sample_never_mangled(tmp_path, capsys):
    root = _folder(tmp_path / "pairs")
    (root / "p1.txt").write_bytes("un café crème".encode("latin-1"))
    pairs = open_pairs(str(root), TF)
    assert [where for where, _ in pairs.skipped] == [f"{root / 'p1.txt'}:1:7"]
    assert pairs.skipped[0][1].startswith("not UTF-8 text (byte 0xE9)")
    assert _convert(root, tmp_path / "out") == 0
    assert "skipped 1 unusable" in capsys.readouterr().out
    captions = _tar_captions(tmp_path / "out" / "shards-000000.tar")
    assert sorted(captions) == ["picture 0", "picture 2", "picture 3"] and not any("\ufffd" in c for c in captions)


def test_a_latin1_caption_inside_a_shard_is_a_bad_sample(tmp_path):
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tf:
        for name, data in [("a.png", _png(1)), ("a.txt", "café".encode("latin-1")), ("b.png", _png(2)), ("b.txt", b"ok")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    items = list(open_pairs(str(path), TF))
    assert [it["caption"] for it in items] == ["ok"]
    ((where, reason),) = [s for it in items for s in decode_skips(it["skipped"])]
    assert where == f"{path}:a.txt:1:4" and reason.startswith("not UTF-8 text (byte 0xE9)")


# --------------------------------------------------------------------------- bad samples on a stream
@pytest.mark.slow
def test_a_stream_with_too_many_bad_samples_stops_the_run(tmp_path):
    # the report's case: 30 zero-byte images among 158 samples of tar shards trained to the end
    samples = [{"image_bytes": b"" if i % 5 == 2 and i < 150 else _png(i % 256), "ext": "png",
                "captions": (f"sample {i}",), "label": -1} for i in range(158)]
    write_shards(iter(samples), tmp_path / "shards", shard_size=40)
    cfg = load_config("fashion-tiny", [
        f"data.source={tmp_path / 'shards' / 'shards-{000000..000003}.tar'}", "data.image_mean=[0.5]",
        "data.image_std=[0.5]", "data.shuffle_buffer=16", "train.batch_size=16", "train.steps=40",
        "train.progress=false", "train.warmup_steps=1", "model.vision.width=16", "model.vision.layers=1",
        "model.vision.heads=2", "model.text.width=16", "model.text.layers=1", "model.text.heads=2",
        "model.embed_dim=8"])
    with pytest.raises(TooManyBadSamplesError, match=r"of the first \d+ samples read .* more than data.max_bad_fraction 0.01"):
        train(cfg, tmp_path / "run")
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["bad_fraction"] > 0.01 and report["skipped"][0]["reason"].startswith("cannot decode image")
