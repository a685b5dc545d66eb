"""Batched, gradient-free embedding of images and texts for the evaluation tasks.

A model here is anything with `encode_image(images, normalize=...)` and
`encode_text(tokens, normalize=...)` (a lipkit model, an open_clip model, a test fake).
Embeddings come back as float32 on the CPU, in input order.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """Put `model` in eval mode under no_grad; restore its previous mode afterwards.

    no_grad rather than inference_mode: the embeddings returned are ordinary tensors that callers
    may modify in place.
    """
    was_training = getattr(model, "training", None)
    if was_training is not None and hasattr(model, "train"):
        model.train(False)
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training is not None and hasattr(model, "train"):
            model.train(was_training)


def model_device(model) -> torch.device | None:
    """The device of the model's first parameter, or None when it has none we can see."""
    parameters = getattr(model, "parameters", None)
    if parameters is None:
        return None
    try:
        return next(iter(parameters())).device
    except StopIteration:
        return None


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _run_batches(encode: Callable, inputs, batch_size: int, normalize: bool) -> torch.Tensor:
    """encode(inputs[i:i+batch_size]) for each batch, optionally L2-normalised, on the CPU."""
    outputs = []
    for start in range(0, len(inputs), batch_size):
        out = encode(inputs[start:start + batch_size]).float()
        if normalize:
            # Harmless after encode_*(normalize=True); guarantees unit rows for any encoder.
            out = F.normalize(out, dim=-1)
        outputs.append(out.cpu())
    return torch.cat(outputs)


def _to(x: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    return x if device is None else x.to(device, non_blocking=True)


def embed_images(model, images: torch.Tensor, batch_size: int, normalize: bool = True, *,
                 feature_fn: FeatureFn | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Embed `images` [N, C, H, W] -> [N, D].

    `feature_fn` (images -> features) replaces `model.encode_image`, e.g. to read pre-projection
    tower features for a linear probe; its output is L2-normalised only when `normalize` is True.
    `device` defaults to the model's parameter device (inputs are left where they are if the
    model has no parameters).
    """
    _check_batch_size(batch_size)
    if not isinstance(images, torch.Tensor) or images.ndim < 2 or images.shape[0] == 0:
        raise ValueError("images must be a non-empty tensor [N, ...], got "
                         f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))}")
    device = torch.device(device) if device is not None else model_device(model)
    if feature_fn is None:
        def encode(batch):
            return model.encode_image(_to(batch, device), normalize=normalize)
    else:
        def encode(batch):
            return feature_fn(_to(batch, device))
    with eval_mode(model):
        return _run_batches(encode, images, batch_size, normalize)


def embed_texts(model, tokenize: Callable[[list[str]], torch.Tensor], texts: Sequence[str],
                batch_size: int, normalize: bool = True, *, feature_fn: FeatureFn | None = None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Tokenize and embed `texts` -> [len(texts), D], `batch_size` texts at a time.

    `feature_fn` (tokens -> features) replaces `model.encode_text`, as in `embed_images`."""
    _check_batch_size(batch_size)
    texts = list(texts)
    if not texts:
        raise ValueError("texts must be a non-empty list of strings")
    device = torch.device(device) if device is not None else model_device(model)

    def encode(chunk):
        tokens = _to(tokenize(chunk), device)
        if feature_fn is not None:
            return feature_fn(tokens)
        return model.encode_text(tokens, normalize=normalize)

    with eval_mode(model):
        return _run_batches(encode, texts, batch_size, normalize)
