"""The check every export and import ends with: the other library's model, run by that library,
against the lipkit model on the same probe images and captions.

Images: seeded random pixel tensors (a grayscale lipkit tower gets one channel, the RGB model the
same values in all three). Captions: a fixed set with punctuation, digits, an empty one and one
longer than any context (truncation). Each side tokenises with its own tokenizer; the ids must be
equal (up to each row's end token on import, where the source may pad differently) and the
normalised embeddings within `TOLERANCE`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lipkit.config import ModelConfig
from lipkit.tokenizer import Tokenizer

from .layout import InteropError

TOLERANCE = 1e-5  # max |difference| of normalised fp32 embeddings
PROBE_CAPTIONS = [
    "a photo of a t-shirt.",
    "An ankle boot!",
    "two dogs, 3 cats & one bird?",
    "",
    "a sneaker! on a shelf",
    " ".join(["a long caption about a pair of trousers on a chair"] * 12),
]
PROBE_IMAGES = 4


@dataclass
class Target:
    """Another library's CLIP as lipkit checks it."""
    encode_image: Callable[[torch.Tensor], torch.Tensor]  # RGB pixels [B, 3, S, S] -> embeddings
    encode_text: Callable[[list[str]], torch.Tensor]  # captions -> embeddings (its own tokenizer)
    tokenize: Callable[[list[str]], torch.Tensor]  # captions -> ids [B, L]


@dataclass
class Foreign:
    """A model read from another library, ready to become a lipkit run."""
    model_cfg: ModelConfig
    state: dict[str, torch.Tensor]  # its own weight names
    tokenizer: Tokenizer
    image_mean: list[float]
    image_std: list[float]
    target: Target
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Agreement:
    image: float  # max |difference| of the normalised image embeddings
    text: float

    def __str__(self) -> str:
        return (f"max |difference| {self.image:.1e} (images), {self.text:.1e} (captions) on {PROBE_IMAGES} probe "
                f"images and {len(PROBE_CAPTIONS)} captions")


def probe_pixels(channels: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(lipkit's input, the RGB model's input) for the same images."""
    g = torch.Generator().manual_seed(0)
    ours = torch.randn(PROBE_IMAGES, channels, image_size, image_size, generator=g)
    return ours, ours.expand(-1, 3, -1, -1).contiguous() if channels == 1 else ours


def _through_end(ids: torch.Tensor, end_id: int) -> list[list[int]]:
    """Each row up to and including its first end token."""
    return [row[: int((row == end_id).nonzero()[0]) + 1].tolist() if (row == end_id).any() else row.tolist() for row in ids]


@torch.no_grad()
def check(model, tokenizer: Tokenizer, target: Target, what: str, exact_ids: bool) -> Agreement:
    """Compare; an InteropError says what differs. `exact_ids`: the whole padded rows must agree."""
    ours_ids, theirs_ids = tokenizer(PROBE_CAPTIONS), target.tokenize(PROBE_CAPTIONS)
    same = torch.equal(ours_ids, theirs_ids) if exact_ids else \
        _through_end(ours_ids, tokenizer.eos_id) == _through_end(theirs_ids, tokenizer.eos_id)
    if not same:
        row = next(i for i in range(len(PROBE_CAPTIONS)) if ours_ids[i].tolist() != theirs_ids[i].tolist())
        raise InteropError(f"{what}: its tokenizer gives other ids than lipkit's for {PROBE_CAPTIONS[row][:40]!r}: "
                           f"{theirs_ids[row].tolist()[:12]}... vs {ours_ids[row].tolist()[:12]}...")
    v = model.cfg.vision
    ours_px, theirs_px = probe_pixels(v.channels, v.image_size)
    image = (model.encode_image(ours_px, normalize=True) - F.normalize(target.encode_image(theirs_px), dim=-1)).abs().max()
    text = (model.encode_text(ours_ids, normalize=True) - F.normalize(target.encode_text(PROBE_CAPTIONS), dim=-1)).abs().max()
    agreement = Agreement(float(image), float(text))
    if not max(agreement.image, agreement.text) <= TOLERANCE:  # a NaN fails too
        raise InteropError(f"{what}: embeddings differ from lipkit's ({agreement}; tolerance {TOLERANCE:g})")
    return agreement
