"""Labelled image sets written in the three layouts `lipkit eval --dataset` reads, and a stand-in
model whose embeddings are set by hand, so that every metric can be worked out on paper; and
`in_memory`, a model with tensors of images as a task's `evaluate` takes them.

Each image is an 8x8 RGB PNG (or lossless WebP) that draws a class and an id: red = 40 * class
+ 20, green = id. The stand-in decodes them: its image embedding is e_class + e_id (normalised:
both halves weigh 1/sqrt 2); a text's embedding is e_class when it names one of CLASSES and/or
e_id for "photo <id>". So a class prompt scores 1/sqrt 2 with every image drawing that class and
0 with the rest, and the caption "photo 7" scores 1/sqrt 2 with image 7 alone.
"""
from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lipkit.config import EvalConfig
from lipkit.eval.adapter import EvalModel, from_open_clip
from lipkit.eval.datasets import EvalData, Split

CLASSES = ["cat", "dog", "red fox"]  # the stand-in's classes, in its own order
MAX_ID = 64
DIM = len(CLASSES) + MAX_ID


def drawing(cls: str, ident: int, fmt: str = "PNG") -> bytes:
    a = np.zeros((8, 8, 3), dtype=np.uint8)
    a[..., 0] = 40 * CLASSES.index(cls) + 20
    a[..., 1] = ident
    out = io.BytesIO()
    Image.fromarray(a).save(out, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return out.getvalue()


def preprocess(image: Image.Image) -> torch.Tensor:
    a = np.asarray(image, dtype=np.float32)
    return torch.tensor([a[..., 0].mean(), a[..., 1].mean()])


def tokenize(texts: list[str]) -> torch.Tensor:
    rows = []
    for t in texts:
        cls = next((i for i, c in enumerate(CLASSES) if re.search(rf"\b{c}\b", t)), -1)
        ident = re.search(r"photo (\d+)", t)
        rows.append([cls, int(ident.group(1)) if ident else -1])
    return torch.tensor(rows)


def _one_hot(cls: torch.Tensor, ident: torch.Tensor) -> torch.Tensor:
    v = torch.zeros(len(cls), DIM)
    rows = torch.arange(len(cls))
    v[rows[cls >= 0], cls[cls >= 0]] = 1.0
    v[rows[ident >= 0], len(CLASSES) + ident[ident >= 0]] = 1.0
    return v


class StandIn(nn.Module):
    """encode_image / encode_text as described above; counts the images it embeds."""

    def __init__(self):
        super().__init__()
        self.images_seen = 0

    def encode_image(self, x: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        self.images_seen += len(x)
        cls = ((x[:, 0] - 20) / 40).round().long().clamp(0, len(CLASSES) - 1)
        ident = x[:, 1].round().long().clamp(0, MAX_ID - 1)
        v = _one_hot(cls, ident)
        return F.normalize(v, dim=-1) if normalize else v

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        v = _one_hot(tokens[:, 0], tokens[:, 1])
        return F.normalize(v, dim=-1) if normalize else v


def in_memory(model, tokenize, test: tuple, train: tuple | None = None, class_names=None, templates=None,
              **hooks) -> tuple[EvalModel, EvalData]:
    """`model` (anything with encode_image / encode_text) and a dataset of model-ready image
    tensors: `test` and `train` are (images, labels) or (images, labels, the captions of each
    image); `hooks` are EvalModel fields (image_features, ...)."""
    def split(images, labels, captions=None):
        return Split(images, None if labels is None else np.asarray(labels),
                     captions and [c[0] for c in captions], captions)

    em = EvalModel(model, tokenize, preprocess=None, name="in-memory", pretrained="", **hooks)
    return em, EvalData("in-memory", train and split(*train), split(*test), class_names, templates or [])


def stand_in(**eval_settings) -> object:
    settings = {"num_workers": 0, "batch_size": 4} | eval_settings
    return from_open_clip(StandIn(), preprocess, tokenize, name="stand-in", pretrained="hand-set",
                          eval_cfg=EvalConfig(**settings))


@dataclass
class Item:
    label: str  # the class it is filed under
    ident: int
    drawn: str = ""  # the class the image shows ("" = its label)
    captions: list[str] = field(default_factory=list)

    @property
    def shows(self) -> str:
        return self.drawn or self.label

    @property
    def file(self) -> str:
        return f"{self.label.replace(' ', '_')}/{self.ident:03d}.png"


def pets() -> dict[str, list[Item]]:
    """train: 4 images a class, each showing its class (ids 0-11). test (in folder order): two
    cats; three dogs, the second showing a cat; four red foxes, the second and third showing
    dogs (ids 20-28). Captions "photo <id>", except that images 23 and 27 (test positions 3 and
    7) are captioned with ids no image shows."""
    train = [Item(c, 4 * k + i, captions=[f"photo {4 * k + i}"]) for k, c in enumerate(CLASSES)
             for i in range(4)]
    test = [Item("cat", 20), Item("cat", 21), Item("dog", 22), Item("dog", 23, "cat"),
            Item("dog", 24), Item("red fox", 25), Item("red fox", 26, "dog"),
            Item("red fox", 27, "dog"), Item("red fox", 28)]
    for it in test:
        it.captions = [{23: "photo 63", 27: "photo 62"}.get(it.ident, f"photo {it.ident}")]
    return {"train": train, "test": test}


def folder_order(items: list[Item]) -> list[Item]:
    """The order the folder layout reads: class folders, then file names, sorted."""
    return sorted(items, key=lambda it: it.file)


def write_folder(root: Path, splits: dict[str, list[Item]]) -> Path:
    for split, items in splits.items():
        base = root / split if split else root
        for it in items:
            path = base / it.file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(drawing(it.shows, it.ident))
            if it.captions:
                path.with_suffix(".txt").write_text("\n".join(it.captions) + "\n")
    return root


def write_jsonl(path: Path, items: list[Item], label_key: str = "label") -> Path:
    """Images beside the table, one row per image (captions as a list)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for it in items:
        image = path.parent / "images" / f"{it.ident:03d}.png"
        image.parent.mkdir(exist_ok=True)
        image.write_bytes(drawing(it.shows, it.ident))
        row = {"image": f"images/{image.name}", label_key: it.label}
        if it.captions:
            row["caption"] = it.captions
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def write_clip_benchmark(root: Path, splits: dict[str, list[Item]], classnames: list[str],
                         templates: list[str], shard_size: int = 4) -> Path:
    """CLIP_benchmark's layout: root/{split}/{0..n-1}.tar + nshards.txt, samples s0000000.webp
    + .cls (+ .txt), classnames.txt and zeroshot_classification_templates.txt in root."""
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    for split, items in splits.items():
        samples = []
        for i, it in enumerate(items):
            key = f"s{i:07d}"
            members = [(f"{key}.webp", drawing(it.shows, it.ident, "WEBP")),
                       (f"{key}.cls", str(classnames.index(it.label)).encode())]
            if it.captions:
                members.append((f"{key}.txt", "\n".join(it.captions).encode()))
            samples.append(members)
        shards = [samples[i:i + shard_size] for i in range(0, len(samples), shard_size)]
        for n, shard in enumerate(shards):
            write_tar(root / split / f"{n}.tar", [m for sample in shard for m in sample])
        (root / split / "nshards.txt").write_text(f"{len(shards)}\n")
    return root
