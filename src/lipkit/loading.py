"""`lipkit.load(SPEC) -> (model, preprocess, tokenizer)`: the one way to get a trained model.

SPEC is a lipkit directory: a run directory, one of its checkpoints (`RUN/checkpoints/step-N`),
or a model written by `lipkit import` (a run directory too). `preprocess` is the run's evaluation
transform (PIL image -> model-ready tensor), the same object `lipkit eval` applies; `tokenizer`
maps a list of strings to token ids [B, context_length].

    import lipkit
    model, preprocess, tokenizer = lipkit.load("runs/clip")
    images = torch.stack([preprocess(Image.open(p)) for p in paths])
    image_embeds = model.encode_image(images, normalize=True)
    text_embeds = model.encode_text(tokenizer(["a photo of a bag"]), normalize=True)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lipkit.checkpoint import load_run
from lipkit.config import RunConfig
from lipkit.data.transforms import ImageTransform
from lipkit.errors import LipkitError
from lipkit.models import LIPModel
from lipkit.tokenizer import Tokenizer

FOREIGN_PREFIXES = ("open_clip:", "hf:")


class LoadError(LipkitError, ValueError):
    """A spec lipkit.load cannot read, stated in one line."""


@dataclass
class LoadedModel:
    model: LIPModel  # in eval mode
    preprocess: ImageTransform  # PIL image -> [C, H, W]
    tokenizer: Tokenizer
    config: RunConfig
    path: Path


def image_transform(cfg: RunConfig) -> ImageTransform:
    """The evaluation transform of a run: resize the shorter side, centre crop, normalise."""
    from lipkit.data import fashion_mnist
    from lipkit.data.sources import transform_from_config

    v = cfg.model.vision
    if v.channels == 1:  # the grayscale towers are trained on Fashion-MNIST's normalisation
        return ImageTransform(v.image_size, (fashion_mnist.MEAN,), (fashion_mnist.STD,))
    return transform_from_config(cfg.data, v, train=False)  # data.image_mean / image_std


def load_directory(path: str | Path) -> LoadedModel:
    """Model, preprocessing, tokenizer and config of a run, checkpoint or imported-model directory."""
    path = Path(path)
    model, tokenizer, cfg = load_run(path)
    return LoadedModel(model, image_transform(cfg), tokenizer, cfg, path)


def load(spec: str | Path) -> tuple[LIPModel, ImageTransform, Tokenizer]:
    """(model, preprocess, tokenizer) of a lipkit directory; see the module docstring."""
    if str(spec).startswith(FOREIGN_PREFIXES):
        raise LoadError(f"{spec}: lipkit.load reads lipkit directories; convert it first with "
                        f"`lipkit import {spec} OUT`, then load OUT")
    loaded = load_directory(spec)
    return loaded.model, loaded.preprocess, loaded.tokenizer
