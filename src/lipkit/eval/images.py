"""Images on disk for evaluation, decoded in batches by DataLoader workers.

`ImageFiles` is a list of `ImageRef`s (an image file, or a byte range of a tar shard) that is
only read when batches are made: `image_batches` decodes, optionally corrupts, and preprocesses
the images of one batch in worker processes and hands the model-ready tensor over, so memory
holds a few batches of images, never a whole set. An image that cannot be used (missing,
corrupt, over the pixel limit) is left out of its batch and reported with the batch.

In-memory image sets (a uint8 array or a list of PIL images, the built-in datasets; a tensor of
model-ready images) go through the same `image_batches`, preprocessed in this process batch by
batch.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lipkit.data.images import BadSampleError, open_image

# (PIL image, its index in the set) -> PIL image, applied before the model's preprocessing
ImageEdit = Callable[[Image.Image, int], Image.Image]


@dataclass(frozen=True)
class ImageRef:
    where: str  # what messages call the image: a path, or shard:key
    path: str  # the file holding it
    offset: int = -1  # >= 0: the image is `size` bytes at `offset` in `path` (a tar shard)
    size: int = 0

    def source(self) -> str | bytes:
        if self.offset < 0:
            return self.path
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(self.size)
        except OSError as e:
            raise BadSampleError(self.where, f"cannot read ({e.strerror or e})") from None
        if len(data) != self.size:
            raise BadSampleError(self.where, f"truncated: {len(data)} of {self.size} bytes")
        return data


@dataclass
class ImageFiles:
    """Images read from disk when a batch needs them; `edit` changes each after decoding."""
    refs: list[ImageRef]
    edit: ImageEdit | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.refs)

    def take(self, indices: Sequence[int]) -> ImageFiles:
        return ImageFiles([self.refs[i] for i in indices], self.edit)

    def edited(self, edit: ImageEdit) -> ImageFiles:
        return ImageFiles(self.refs, edit)

    def load(self, index: int) -> Image.Image:
        """The decoded (and edited) RGB image; BadSampleError when it cannot be used (also when
        it is over `open_image`'s pixel limit)."""
        ref = self.refs[index]
        image = open_image(ref.source(), name=ref.where)
        return image if self.edit is None else self.edit(image, index)


Images = np.ndarray | list[Image.Image] | ImageFiles | torch.Tensor


@dataclass
class Batch:
    images: torch.Tensor | None  # model-ready [n, C, H, W]; None when every image was unusable
    indices: np.ndarray  # the positions in the set of the images in `images`
    skipped: list[tuple[str, str]]  # (where, reason) of the unusable ones


class _Decoded(Dataset):
    def __init__(self, files: ImageFiles, preprocess: Callable[[Image.Image], torch.Tensor]):
        self.files, self.preprocess = files, preprocess

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        try:
            return index, self.preprocess(self.files.load(index)), None
        except BadSampleError as e:
            return index, None, (e.where, e.reason)


def _collate(items) -> Batch:
    good = [(i, x) for i, x, _ in items if x is not None]
    return Batch(torch.stack([x for _, x in good]) if good else None,
                 np.array([i for i, _ in good], dtype=np.int64),
                 [bad for _, _, bad in items if bad is not None])


def batch_count(images: Images, batch_size: int) -> int:
    return -(-len(images) // batch_size)


def image_batches(images: Images, to_model: Callable, preprocess: Callable, batch_size: int,
                  num_workers: int = 0) -> Iterator[Batch]:
    """Model-ready batches of `images` in order. In-memory images go through `to_model` (a
    batch of them -> tensor); files are decoded and `preprocess`ed (one PIL image -> tensor)
    in `num_workers` DataLoader processes (0: in this one)."""
    if not isinstance(images, ImageFiles):
        for start in range(0, len(images), batch_size):
            stop = min(start + batch_size, len(images))
            yield Batch(to_model(images[start:stop]), np.arange(start, stop), [])
        return
    loader = DataLoader(_Decoded(images, preprocess), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=_collate)
    yield from loader
