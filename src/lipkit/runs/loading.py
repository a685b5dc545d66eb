"""`lipkit.load(SPEC) -> (model, preprocess, tokenizer)`: the one way to get a trained model.

SPEC is a lipkit directory: a run directory, one of its checkpoints (`RUN/checkpoints/step-N`),
or a model written by `lipkit import` (a run directory too). `preprocess` is the run's evaluation
transform (a PIL image or an image file -> model-ready tensor), the same object `lipkit eval`
applies, and it reads the pixels as training and evaluation do (`data.images.flatten_image`:
EXIF orientation, 16-bit grey, transparency onto white), so `preprocess(Image.open(p))` embeds
as `lipkit eval` does; `tokenizer` maps a list of strings to token ids [B, context_length].

    import lipkit
    model, preprocess, tokenizer = lipkit.load("runs/clip")
    images = torch.stack([preprocess(Image.open(p)) for p in paths])
    image_embeds = model.encode_image(images, normalize=True)
    text_embeds = model.encode_text(tokenizer(["a photo of a bag"]), normalize=True)

Underneath: `load_model` (the model alone), `load_run` (model, tokenizer, config) and
`load_directory` (all of it), over the run-directory format of lipkit.runs.directory.
"""
from __future__ import annotations

import copy
import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from lipkit.config import RunConfig
from lipkit.data.images import flatten_image, open_image
from lipkit.data.transforms import ImageTransform
from lipkit.errors import LipkitError
from lipkit.models import LIPModel
from lipkit.models.lora import merged_model, without_lora
from lipkit.runs.directory import MODEL_FILE, TOKENIZER_FILE, CheckpointError, load_run_config, load_state_into
from lipkit.tokenizer import Tokenizer

FOREIGN_PREFIXES = ("open_clip:", "hf:")


class LoadError(LipkitError, ValueError):
    """A spec lipkit.load cannot read, stated in one line."""


@dataclass(frozen=True)
class Preprocess(ImageTransform):
    """A run's evaluation transform that takes a PIL image or an image file, and reads its pixels
    as training and `lipkit eval` decode them before transforming."""

    def __call__(self, image: Image.Image | str | Path, rng: random.Random | None = None) -> torch.Tensor:
        if isinstance(image, (str, Path)):
            image = open_image(image)
        elif isinstance(image, Image.Image):
            image = flatten_image(image)
        else:
            raise TypeError(f"preprocess takes a PIL image or an image file, got {type(image).__name__}")
        return super().__call__(image, rng)


@dataclass
class LoadedModel:
    model: LIPModel  # in eval mode
    preprocess: Preprocess  # PIL image or image file -> [C, H, W]
    tokenizer: Tokenizer
    config: RunConfig
    path: Path


def load_model(run_dir: str | Path, cfg: RunConfig | None = None) -> LIPModel:
    """The model of a run, checkpoint or imported-model directory (`cfg`: its config, when it
    has been read already), in eval mode."""
    run_dir = Path(run_dir)
    cfg = cfg or load_run_config(run_dir)
    model = LIPModel(cfg.model)
    load_state_into(model, run_dir / MODEL_FILE)
    model.eval()
    return model


def load_run(run_dir: str | Path, merged: bool = False) -> tuple[LIPModel, Tokenizer, RunConfig]:
    """(model, tokenizer, config) of a finished or in-progress run directory. `merged`: a LoRA
    run's adapters folded into the base weights, a plain model and its config with LoRA off."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    model = load_model(run_dir, cfg)
    if merged and cfg.model.lora.enabled:
        model, cfg = merged_model(model).eval(), copy.deepcopy(cfg)
        cfg.model = without_lora(cfg.model)
    tok_path = run_dir / TOKENIZER_FILE
    if not tok_path.is_file():
        raise CheckpointError(f"{run_dir}: missing {TOKENIZER_FILE}")
    return model, Tokenizer.load(tok_path), cfg


def image_transform(cfg: RunConfig) -> Preprocess:
    """The evaluation transform of a run: resize the shorter side, centre crop, and normalise as
    the run's training images were (data.normalization)."""
    from lipkit.data import fashion_mnist
    from lipkit.data.sources import transform_from_config

    v = cfg.model.vision
    if cfg.data.normalization == "fashion-mnist":
        return Preprocess(v.image_size, (fashion_mnist.MEAN,), (fashion_mnist.STD,))
    t = transform_from_config(cfg.data, v, train=False)  # data.image_mean / image_std
    return Preprocess(**{f.name: getattr(t, f.name) for f in dataclasses.fields(t)})


def load_directory(path: str | Path, merged: bool = False) -> LoadedModel:
    """Model, preprocessing, tokenizer and config of a run, checkpoint or imported-model directory
    (`merged`: see load_run)."""
    path = Path(path)
    model, tokenizer, cfg = load_run(path, merged)
    return LoadedModel(model, image_transform(cfg), tokenizer, cfg, path)


def load(spec: str | Path, merged: bool = False) -> tuple[LIPModel, Preprocess, Tokenizer]:
    """(model, preprocess, tokenizer) of a lipkit directory; see the module docstring. `merged`:
    a LoRA run's model as a plain one, its adapters folded into the base weights."""
    if str(spec).startswith(FOREIGN_PREFIXES):
        raise LoadError(f"{spec}: lipkit.load reads lipkit directories; convert it first with "
                        f"`lipkit import {spec} OUT`, then load OUT")
    loaded = load_directory(spec, merged)
    return loaded.model, loaded.preprocess, loaded.tokenizer
