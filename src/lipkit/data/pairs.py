"""Map-style image–caption datasets: a list of records, images decoded on access.

An item is a dict `{"image": FloatTensor[C, H, W], "caption": str, "index": int}` plus `"label"`
when the source has labels. An image with several captions gives one caption per access, chosen
by hashing (seed, epoch, index) so it is reproducible and fresh each epoch (`set_epoch`);
`captions(i)` gives them all (retrieval). Augmentation draws from a generator seeded the same way.

Bad samples never stop a run on their own: a record whose image is missing, corrupt or over the
pixel limit is replaced by another record, and records with no usable caption are dropped when
the dataset is built (`dataset.skipped`). Every item carries `"skipped"`: the bad samples met
on the way to it, JSON-encoded [[where, reason], ...] ("" for none). A string, so that any
DataLoader's default collation keeps it (a list of strings per batch) and
`lipkit.data.health` can count them in the main process.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .captions import caption_class, sample_hash
from .images import DEFAULT_MAX_PIXELS, BadSampleError, open_image
from .transforms import ImageTransform

_MAX_REPLACEMENTS = 16


def encode_skips(skipped) -> str:
    """[(where, reason), ...] -> the string items carry ("" for none)."""
    import json

    return json.dumps([list(s) for s in skipped]) if skipped else ""


def decode_skips(value) -> list[tuple[str, str]]:
    """Inverse of encode_skips; also accepts a list of pairs, or a batch's list of strings."""
    import json

    if not value:
        return []
    if isinstance(value, str):
        return [tuple(s) for s in json.loads(value)]
    if all(isinstance(v, str) for v in value):
        return [s for v in value for s in decode_skips(v)]
    return [tuple(s) for s in value]


def checked_index(index: int, size: int) -> int:
    """`index` as a position in [0, size): a negative one counts from the end."""
    if not -size <= index < size:
        raise IndexError(f"index {index} out of range for {size} items")
    return index % size


def first_usable(index: int, size: int, *, seed: int, epoch: int, name: str, item: Callable[[int], dict]) -> dict:
    """`item(index)`; when that sample is unusable (BadSampleError), `item` of a pseudo-random
    replacement instead (by seed, epoch and index: not the neighbour, as neighbours often share the
    fault), up to _MAX_REPLACEMENTS tries. The item's "skipped" lists the bad samples met on the way."""
    skipped, candidate = [], index
    for attempt in range(_MAX_REPLACEMENTS):
        try:
            found = item(candidate)
            found["skipped"] = encode_skips(skipped)
            return found
        except BadSampleError as e:
            skipped.append((e.where, e.reason))
            candidate = sample_hash(seed, epoch, index, 3 + attempt) % size
    raise BadSampleError(name, f"{_MAX_REPLACEMENTS} samples in a row are unusable, e.g. {skipped[0][0]}: {skipped[0][1]}")


def shared_epoch() -> torch.Tensor:
    """An epoch counter in shared memory: `set_epoch` in the main process reaches DataLoader
    workers that hold their own copy of the dataset (persistent workers)."""
    return torch.zeros((), dtype=torch.long).share_memory_()


@dataclass(frozen=True)
class PairRecord:
    image: str  # a file path (FilePairs) or an identifier (in-memory sources)
    captions: tuple[str, ...]
    label: int = -1  # -1: unknown

    def where(self) -> str:
        return self.image


def clean_captions(captions: Sequence[str]) -> tuple[str, ...]:
    """Stripped, non-empty captions in order, duplicates removed."""
    out = []
    for c in captions:
        c = " ".join(str(c).split())
        if c and c not in out:
            out.append(c)
    return tuple(out)


class PairDataset(Dataset):
    """Records + `load_image(i)`; subclasses say where images come from."""

    has_labels = False

    def __init__(self, records: Sequence[PairRecord], transform: ImageTransform | None, *, seed: int = 0,
                 name: str = "pairs", skipped: Sequence[tuple[str, str]] = (), max_pixels: int = DEFAULT_MAX_PIXELS):
        self.records = list(records)
        self.transform = transform
        self.seed = seed
        self._epoch = shared_epoch()
        self.name = name
        self.skipped = list(skipped)  # (where, reason) found while building
        self.max_pixels = max_pixels
        self.caption_noise = 0.0  # share of items captioned as another class (set_caption_noise)
        self.augment = None  # a lipkit.data.augment.TrainingAugment: extra views, caption augmentation
        self._by_label: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.records)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def resolve(self, index: int, epoch: int | None = None) -> tuple[PairDataset, int]:
        """The dataset holding item `index` and its index there (itself here; mixes map through)."""
        return self, index

    # ------------------------------------------------------------------ captions
    def captions(self, index: int) -> tuple[str, ...]:
        return self.records[index].captions

    def set_caption_noise(self, noise: float) -> None:
        """Loosely paired captions (data.caption_noise): a share `noise` of the items, drawn anew
        each epoch, get the caption of a record of another class (labelled sources only)."""
        if noise and not self.has_labels:
            raise ValueError(f"{self.name}: data.caption_noise needs class labels (label_column), this source has none")
        self.caption_noise = noise
        self._by_label = {}
        if noise:
            for i, r in enumerate(self.records):
                self._by_label.setdefault(r.label, []).append(i)

    def caption(self, index: int, epoch: int | None = None) -> str:
        e = self.epoch if epoch is None else epoch
        if self.caption_noise:
            label = self.records[index].label
            other = caption_class(self.seed, e, index, label, sorted(self._by_label), self.caption_noise)
            if other != label:
                donors = self._by_label[other]
                index = donors[sample_hash(self.seed, e, index, 103) % len(donors)]
        caps = self.records[index].captions
        return caps[sample_hash(self.seed, e, index, 1) % len(caps)] if len(caps) > 1 else caps[0]

    def possible_captions(self) -> list[str]:
        """Every caption of every record (a tokenizer corpus)."""
        return [c for r in self.records for c in r.captions]

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([r.label for r in self.records], dtype=torch.long)

    # ------------------------------------------------------------------ images
    def load_image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def raw_image(self, index: int) -> tuple[bytes, str]:
        """(encoded bytes, extension) for writing shards; in-memory sources encode PNG."""
        import io

        buf = io.BytesIO()
        self.load_image(index).save(buf, format="PNG")
        return buf.getvalue(), "png"

    def image_tensor(self, index: int, epoch: int | None = None, image: Image.Image | None = None) -> torch.Tensor:
        """The (first view's) transformed image; `image`: the item's image, already loaded."""
        if self.transform is None:
            raise ValueError(f"{self.name}: no image transform given")
        e = self.epoch if epoch is None else epoch
        rng = random.Random(sample_hash(self.seed, e, index, 2)) if self.transform.random else None
        return self.transform(self.load_image(index) if image is None else image, rng)

    # ------------------------------------------------------------------ items
    def item(self, index: int, epoch: int | None = None) -> dict:
        """The item at `index`; raises BadSampleError when its image cannot be used."""
        e = self.epoch if epoch is None else epoch
        image = self.load_image(index)
        out = {"image": self.image_tensor(index, e, image), "caption": self.caption(index, e), "index": index}
        if self.has_labels:
            out["label"] = self.records[index].label
        return out if self.augment is None else self.augment.apply(out, image, e, index)

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        return first_usable(checked_index(index, n), n, seed=self.seed, epoch=self.epoch, name=self.name, item=self.item)


class FilePairs(PairDataset):
    """Records whose `image` is a file path."""

    def __init__(self, records, transform, *, labels: bool = False, **kw):
        super().__init__(records, transform, **kw)
        self.has_labels = labels

    def load_image(self, index: int) -> Image.Image:
        mode = self.transform.mode if self.transform is not None else "RGB"
        return open_image(self.records[index].image, max_pixels=self.max_pixels, mode=mode)

    def raw_image(self, index: int) -> tuple[bytes, str]:
        path = Path(self.records[index].image)
        self.load_image(index)  # refuse what training would refuse
        try:
            return path.read_bytes(), path.suffix.lower().lstrip(".") or "png"
        except OSError as e:
            raise BadSampleError(str(path), f"cannot read ({e})") from None


class ArrayPairs(PairDataset):
    """In-memory uint8 images [N, H, W] (grey) or [N, H, W, 3] with their records."""

    def __init__(self, images: np.ndarray, records, transform, *, labels: bool = True, **kw):
        super().__init__(records, transform, **kw)
        if len(images) != len(self.records):
            raise ValueError(f"{len(images)} images but {len(self.records)} records")
        self.images = images
        self.has_labels = labels

    def load_image(self, index: int) -> Image.Image:
        a = self.images[index]
        return Image.fromarray(np.ascontiguousarray(a), mode="L" if a.ndim == 2 else "RGB")
