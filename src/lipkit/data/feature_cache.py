"""Frozen-tower feature cache (LiT): when both towers are fully locked and the image transform has
no randomness, tower features never change, so they are computed once and training runs only
the heads.

`cache_tower_features(dataset, model, tokenizer, ...)` returns a map-style dataset of the same
length whose items are `{"image_features", "text_features", "caption", "index", "skipped"}`: the
image features of the item's record and the text features of the caption it draws this epoch
(several captions per image and weighted mixes keep working: each item is resolved through the
dataset's own `resolve` / `caption`). The model's forward takes such a batch as
`model(image_features=..., text_features=...)`.

Features are computed once per (tower weights, image transform, records, captions) and kept in
`$LIPKIT_CACHE/features/<digest>.safetensors`, so a second run on the same data starts at once.
Images that cannot be decoded are remembered and replaced at training time, like the uncached
path, and reported through the item's "skipped".
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from lipkit.files import atomic_write
from lipkit.progress import progress_bar

from .cache import cache_dir
from .images import BadSampleError
from .mix import MixedPairs
from .pairs import PairDataset, checked_index, encode_skips, first_usable

FORMAT_VERSION = 1


def leaves_of(dataset) -> list[PairDataset] | None:
    """The PairDatasets a (mixed) dataset reads from, or None when it is not cacheable."""
    if isinstance(dataset, MixedPairs):
        return list(dataset.datasets)
    if isinstance(dataset, PairDataset):
        return [dataset]
    return None


def cacheable(dataset) -> str | None:
    """None when `dataset` can be cached, else the reason it cannot."""
    leaves = leaves_of(dataset)
    if leaves is None:
        return f"{type(dataset).__name__} is not a map-style pair dataset"
    for leaf in leaves:
        if leaf.transform is None:
            return f"{leaf.name} has no image transform"
        if leaf.transform.random:
            return "the training transform is random (data.crop=random or data.hflip)"
        if getattr(leaf, "augment", None) is not None:
            return "every epoch draws new views or captions (data.image_views, data.text_augment)"
    return None


class _ImagesOf(Dataset):
    def __init__(self, leaf: PairDataset):
        self.leaf = leaf

    def __len__(self) -> int:
        return len(self.leaf)

    def __getitem__(self, j: int):
        try:
            return j, self.leaf.image_tensor(j, epoch=0), ""
        except BadSampleError as e:
            return j, None, encode_skips([(e.where, e.reason)])


def _collate(items):
    good = [(j, x) for j, x, _ in items if x is not None]
    bad = [(j, s) for j, x, s in items if x is None]
    images = torch.stack([x for _, x in good]) if good else None
    return [j for j, _ in good], images, bad


def _digest(model, leaves: list[PairDataset], captions: list[str], tokenizer) -> str:
    h = hashlib.sha256(f"v{FORMAT_VERSION}".encode())
    for name, tensor in list(model.vision.state_dict().items()) + list(model.text.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    for leaf in leaves:
        h.update(repr(leaf.transform).encode())
        for r in leaf.records:
            try:
                st = os.stat(r.image)
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "-"
            h.update(f"{r.image}|{stamp}\n".encode())
    h.update(json.dumps(captions).encode())
    h.update(json.dumps(tokenizer(["a"]).tolist()).encode())
    return h.hexdigest()[:32]


@torch.no_grad()
def _compute(model, leaves, captions, tokenizer, device, batch_size, num_workers):
    image_feats, bad = [], []
    was_training = model.training
    model.eval()
    try:
        for k, leaf in enumerate(leaves):
            out = torch.zeros(len(leaf), model.vision.width)
            # its own generator: computing the cache leaves the training's random streams as they were
            loader = DataLoader(_ImagesOf(leaf), batch_size=batch_size, num_workers=num_workers, collate_fn=_collate,
                                generator=torch.Generator())
            for idx, images, bad_items in progress_bar(loader, desc=f"features: {leaf.name} images", unit="batch",
                                               dynamic_ncols=True):
                if images is not None:
                    out[idx] = model.vision(images.to(device)).float().cpu()
                bad += [(k, j, s) for j, s in bad_items]
            image_feats.append(out)
        text = torch.zeros(len(captions), model.text.width)
        step = max(batch_size, 256)
        for start in progress_bar(range(0, len(captions), step), desc="features: captions", unit="batch", dynamic_ncols=True):
            tokens = tokenizer(captions[start:start + step]).to(device)
            text[start:start + step] = model.text(tokens).float().cpu()
    finally:
        model.train(was_training)
    return image_feats, text, bad


class CachedFeatures(Dataset):
    def __init__(self, dataset, leaves, image_features, captions, text_features, bad):
        self.dataset, self.leaves = dataset, leaves
        self.image_features, self.text_features = image_features, text_features
        self.caption_index = {c: i for i, c in enumerate(captions)}
        self.bad = {(k, j): s for k, j, s in bad}
        self._leaf_index = {id(leaf): k for k, leaf in enumerate(leaves)}
        self.skipped = getattr(dataset, "skipped", [])
        self.name = getattr(dataset, "name", "pairs")

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def possible_captions(self) -> list[str]:
        return self.dataset.possible_captions()

    def __getitem__(self, index: int) -> dict:
        n, e = len(self), self.epoch
        index = checked_index(index, n)

        def features(candidate: int) -> dict:
            leaf, j = self.dataset.resolve(candidate, e)
            k = self._leaf_index[id(leaf)]
            if (k, j) in self.bad:  # an image that could not be decoded when the cache was made
                raise BadSampleError(*json.loads(self.bad[(k, j)])[0])
            caption = leaf.caption(j, e)
            return {"image_features": self.image_features[k][j],
                    "text_features": self.text_features[self.caption_index[caption]],
                    "caption": caption, "index": index}

        return first_usable(index, n, seed=getattr(self.dataset, "seed", 0), epoch=e, name=self.name, item=features)


def cache_tower_features(dataset, model, tokenizer, *, device=None, batch_size: int = 64, num_workers: int = 0,
                         store: bool = True) -> CachedFeatures:
    """Features of every record and caption of `dataset` through `model`'s (frozen) towers.
    Raises ValueError when the dataset cannot be cached (see `cacheable`)."""
    from lipkit import distributed

    reason = cacheable(dataset)
    if reason is not None:
        raise ValueError(f"cannot cache tower features: {reason}")
    device = device or next(model.parameters()).device
    leaves = leaves_of(dataset)
    captions = sorted({c for leaf in leaves for c in leaf.possible_captions()})
    digest = _digest(model, leaves, captions, tokenizer)
    path = cache_dir() / "features" / f"{digest}.safetensors"
    # Under torchrun, rank 0 computes (or loads) and stores; the others then load its file.
    many = store and distributed.world_size() > 1
    loaded = _load(path, len(leaves)) if store and (distributed.rank() == 0 or not many) else None
    if many:
        if distributed.rank() == 0 and loaded is None:
            loaded = _compute(model, leaves, captions, tokenizer, device, batch_size, num_workers)
            _save(path, *loaded)
        distributed.barrier()
        if distributed.rank() != 0:
            loaded = _load(path, len(leaves))
    if loaded is None:
        loaded = _compute(model, leaves, captions, tokenizer, device, batch_size, num_workers)
        if store:
            _save(path, *loaded)
    image_feats, text, bad = loaded
    return CachedFeatures(dataset, leaves, image_feats, captions, text, bad)


def _save(path: Path, image_feats, text, bad) -> None:
    from safetensors.torch import save_file

    tensors = {f"image.{k}": f.contiguous() for k, f in enumerate(image_feats)} | {"text": text.contiguous()}
    meta = {"bad": json.dumps([[k, j, s] for k, j, s in bad])}
    atomic_write(path, lambda p: (save_file(tensors, str(p), metadata=meta), os.chmod(p, 0o644)))


def _load(path: Path, n_leaves: int):
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            image_feats = [f.get_tensor(f"image.{k}") for k in range(n_leaves)]
            text = f.get_tensor("text")
            bad = [tuple(b) for b in json.loads(f.metadata().get("bad", "[]"))]
    except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, not fatal
        return None
    return image_feats, text, bad
