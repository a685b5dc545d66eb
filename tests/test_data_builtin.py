"""Built-in sources: Tux Paint stamps (real, from Debian), Open Clip Art (fetch logic on a small
package built in the test), SVG rasterising."""
import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lipkit.cli import main
from lipkit.data import ImageTransform, debian, open_image, open_pairs, openclipart, tuxpaint
from lipkit.data.svg import rasterize

SVG = """<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:cc="http://web.resource.org/cc/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
     width="{w}" height="{h}">
  <metadata><rdf:RDF><cc:Work rdf:about="">
    <dc:title>{title}</dc:title>
    <dc:subject><rdf:Bag>{keywords}</rdf:Bag></dc:subject>
  </cc:Work></rdf:RDF></metadata>
  <rect x="0" y="0" width="{w}" height="{h}" fill="#ff0000"/>
</svg>"""


def svg_text(title="", keywords=(), w=40, h=20) -> str:
    return SVG.format(title=title, w=w, h=h, keywords="".join(f"<rdf:li>{k}</rdf:li>" for k in keywords))


def test_rasterize_keeps_aspect_ratio(tmp_path):
    (tmp_path / "wide.svg").write_text(svg_text(w=40, h=20))
    (tmp_path / "tall.svg").write_text(svg_text(w=10, h=30))
    rasterize(tmp_path / "wide.svg", tmp_path / "wide.png", 64)
    rasterize(tmp_path / "tall.svg", tmp_path / "tall.png", 64)
    assert Image.open(tmp_path / "wide.png").size == (64, 32)
    assert Image.open(tmp_path / "tall.png").size == (21, 64)
    assert np.asarray(open_image(tmp_path / "wide.png"))[10, 10].tolist() == [255, 0, 0]


# --------------------------------------------------------------------------- Open Clip Art
def test_caption_from_metadata():
    cap = openclipart.caption_from_metadata
    assert cap("Dog 03 Drawn With Straight Lines", ["mammal", "dog", "animal"], ["animals", "mammals"], "dog_03") == \
        "Dog 03 Drawn With Straight Lines (mammal, dog, animal, mammals, animals)"
    # boilerplate and junk keywords go; a missing title falls back to the file name's words
    assert cap("Clipart by Nicu Buculei - piggybank", ["hash", None, "0x935a874", "game"], ["recreation"], "x") == \
        "piggybank (game, recreation)"
    assert cap("Part of the Flat Icon Collection (Wed Aug 25)", ["computer"], ["computer", "icons"], "folder_yellow") == \
        "folder yellow (computer, icons)"
    assert cap("gramastar", ["stars"], ["shapes", "stars"], "star_61pt23step", frozenset({"gramastar"})) == \
        "star 61pt23step (stars, shapes)"
    assert cap("", [], [], "") == ""


def _fake_package(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())


def _use_fake_package(monkeypatch, root: Path):
    @contextlib.contextmanager
    def fake(package):
        yield root

    monkeypatch.setattr(debian, "extracted_package", fake)


def test_openclipart_fetch_on_a_small_package(tmp_path, monkeypatch):
    monkeypatch.setenv("LIPKIT_CACHE", str(tmp_path / "cache"))
    pkg = tmp_path / "pkg"
    base = "usr/share/openclipart/svg"
    _fake_package(pkg, {
        f"{base}/animals/mammals/cow_01.svg": svg_text("A brown cow", ["cow", "farm"]),
        f"{base}/food/apple.svg": svg_text("", ["fruit"]),
        f"{base}/unsorted/broken.svg": "<svg this is not xml",
        f"{base}/shapes/entity.svg": '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY e "x">]><svg xmlns="http://www.w3.org/2000/svg"/>',
    })
    (pkg / base / "food" / "link.svg").symlink_to("apple.svg")  # duplicates are links: skipped
    _use_fake_package(monkeypatch, pkg)
    dest = openclipart.fetch(workers=1)
    items = openclipart.load_openclipart(fetch_if_missing=False)
    assert [(it.id, it.caption, it.category) for it in items] == [
        ("animals/mammals/cow_01", "A brown cow (cow, farm, mammals, animals)", "animals"),
        ("food/apple", "apple (fruit, food)", "food"),
    ]
    assert Image.open(items[0].image).size == (256, 128)
    meta = json.loads((dest / "meta.json").read_text())
    assert meta["items"] == 2 and {s[0] for s in meta["skipped"]} == {"unsorted/broken", "shapes/entity"}
    ds = open_pairs("openclipart", ImageTransform(16))
    assert len(ds) == 2 and ds[0]["caption"].startswith("A brown cow")


# --------------------------------------------------------------------------- Tux Paint: fetch logic
def test_tuxpaint_fetch_rules_on_a_small_package(tmp_path, monkeypatch):
    monkeypatch.setenv("LIPKIT_CACHE", str(tmp_path / "cache"))
    pkg = tmp_path / "pkg"
    stamps = "usr/share/tuxpaint/stamps"
    png = tmp_path / "x.png"
    Image.new("RGBA", (30, 20), (0, 0, 255, 255)).save(png)
    _fake_package(pkg, {
        f"{stamps}/animals/mammals/rhino.png": png.read_bytes(),
        f"{stamps}/animals/mammals/rhino_mirror.png": png.read_bytes(),
        f"{stamps}/animals/mammals/rhino.txt": "A male black rhino.\nfr.utf8=Un rhinocéros.\n",
        f"{stamps}/town/cartoon/house.svg": svg_text(w=30, h=60),
        f"{stamps}/town/cartoon/house.png": png.read_bytes(),  # a thumbnail: the SVG wins
        f"{stamps}/town/cartoon/house.txt": "A house.",
        f"{stamps}/food/nocaption.png": png.read_bytes(),
        f"{stamps}/food/empty.png": png.read_bytes(),
        f"{stamps}/food/empty.txt": "\n",
    })
    _use_fake_package(monkeypatch, pkg)
    tuxpaint.fetch(workers=1)
    items = tuxpaint.load_tuxpaint(fetch_if_missing=False)
    assert [(i.id, i.caption, i.category, i.style, i.format) for i in items] == [
        ("animals/mammals/rhino", "A male black rhino.", "animals", "photo", "png"),
        ("town/cartoon/house", "A house.", "town", "cartoon", "svg"),
    ]
    assert Image.open(items[1].image).size == (128, 256)  # rasterised, not the thumbnail
    assert items[0].label == tuxpaint.CATEGORIES.index("animals") == 0
    meta = json.loads((tmp_path / "cache" / "tuxpaint" / "meta.json").read_text())
    assert sorted(s[0] for s in meta["skipped"]) == ["food/empty", "food/nocaption"]


def test_a_forced_fetch_that_fails_keeps_the_cached_copy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIPKIT_CACHE", str(tmp_path / "cache"))
    pkg = tmp_path / "pkg"
    png = tmp_path / "x.png"
    Image.new("RGBA", (30, 20), (0, 0, 255, 255)).save(png)
    _fake_package(pkg, {"usr/share/tuxpaint/stamps/animals/cat.png": png.read_bytes(),
                        "usr/share/tuxpaint/stamps/animals/cat.txt": "A cat."})
    _use_fake_package(monkeypatch, pkg)
    assert main(["data", "fetch", "tuxpaint"]) == 0
    cache = tmp_path / "cache" / "tuxpaint"
    before = {p.relative_to(cache): p.read_bytes() for p in sorted(cache.rglob("*")) if p.is_file()}

    @contextlib.contextmanager
    def offline(package):
        raise OSError(101, "Network is unreachable")
        yield

    monkeypatch.setattr(debian, "extracted_package", offline)
    assert main(["data", "fetch", "tuxpaint", "--force"]) == 2
    assert "Network is unreachable" in capsys.readouterr().err
    assert {p.relative_to(cache): p.read_bytes() for p in sorted(cache.rglob("*")) if p.is_file()} == before
    assert sorted(p.name for p in cache.parent.iterdir()) == ["tuxpaint"]  # nothing left aside
    _use_fake_package(monkeypatch, pkg)
    assert main(["data", "fetch", "tuxpaint", "--force"]) == 0
    assert [i.id for i in tuxpaint.load_tuxpaint(fetch_if_missing=False)] == ["animals/cat"]


# --------------------------------------------------------------------------- Tux Paint: the real package
@pytest.fixture(scope="module")
def stamps():
    return tuxpaint.load_tuxpaint()  # fetched from Debian on first use (about a minute)


def test_real_tuxpaint(stamps):
    assert len(stamps) == 949
    assert len({s.caption for s in stamps}) == 803
    assert {s.category for s in stamps} == set(tuxpaint.CATEGORIES)
    assert sum(s.style == "cartoon" for s in stamps) == 132
    rhino = [s for s in stamps if s.caption == "A male black rhino."]
    assert rhino and rhino[0].category == "animals"
    assert all(s.image.is_file() for s in stamps[::50])


def test_holdout_split_is_fixed_and_disjoint(stamps):
    train, holdout = tuxpaint.tuxpaint_holdout_split()
    assert len(holdout) == 200 and len(train) == 749
    assert not {s.id for s in train} & {s.id for s in holdout}
    assert tuxpaint.tuxpaint_holdout_split(items=list(reversed(stamps)))[1] == holdout  # order-free
    # pinned: the project's hold-out must never change silently
    assert [s.id for s in holdout[:3]] == ["animals/amphibians/frog-1", "animals/birds/cartoon/penguin_with_spider",
                                           "animals/birds/cartoon/tux"]
    assert sum(s.style == "cartoon" for s in holdout) == 31
    other = tuxpaint.tuxpaint_holdout_split(seed=1)[1]
    assert {s.id for s in other} != {s.id for s in holdout}
    with pytest.raises(ValueError, match="hold-out size"):
        tuxpaint.tuxpaint_holdout_split(size=10_000)


def test_tuxpaint_as_pairs_and_cli(stamps, capsys):
    ds = open_pairs("tuxpaint:holdout", ImageTransform(32))
    assert len(ds) == 200 and ds.name == "tuxpaint:holdout"
    item = ds[0]
    assert item["image"].shape == (3, 32, 32) and item["caption"] == "A frog." and item["label"] == 0
    assert main(["data", "fetch", "tuxpaint"]) == 0  # cached: instant
    assert "tuxpaint: 949 items" in capsys.readouterr().out
