"""Real images and captions, and tiny trained runs, for the loading and export/import tests (used
from .venv and from .venv-peer)."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from lipkit.config import DataConfig, load_config
from lipkit.data import fashion_mnist_prompts, load_fashion_mnist
from lipkit.train import train

TRAIN = ["train.steps=3", "train.batch_size=64", "train.warmup_steps=1", "train.progress=false",
         "data.train_limit=512", "model.prototypes.num_prototypes=64"]
# An RGB tower at 32 px: real colour images are resized and centre-cropped on the way in.
RGB = ["model.vision.channels=3", "model.vision.image_size=32", "model.vision.patch_size=8"]


def tiny_run(out: Path, *overrides: str):
    """A fashion-tiny run trained for 3 steps; its TrainResult (the trainer's model in eval mode)."""
    torch.manual_seed(0)
    result = train(load_config("fashion-tiny", TRAIN + list(overrides)), out)
    result.model.eval()
    return result


@torch.no_grad()
def lipkit_embeddings(model, preprocess, tokenizer, images, texts):
    """(pixels, normalised image embeddings, normalised text embeddings) through lipkit's own preprocess."""
    pixels = torch.stack([preprocess(im) for im in images])
    return pixels, model.encode_image(pixels, normalize=True), model.encode_text(tokenizer(texts), normalize=True)


def gray_and_rgb_runs(root: Path) -> dict:
    """The fashion-tiny xCLIP run (grayscale, 28 px) and an RGB CLIP run at 32 px."""
    return {"gray": tiny_run(root / "gray", "objective.name=xclip"), "rgb": tiny_run(root / "rgb", *RGB)}


def fashion_images(n: int = 12) -> list[Image.Image]:
    images, _ = load_fashion_mnist("test")
    return [Image.fromarray(a) for a in images[:n]]


def captions() -> list[str]:
    """Evaluation prompts (words the training captions never had), training ones, Tux Paint's."""
    p = fashion_mnist_prompts()
    out = [t.replace("{}", n) for t in p.templates[:4] for n in p.class_names[:5]]
    out += [t.replace("{}", "ankle boot") for t in DataConfig().caption_templates]
    return out + [caption for _, caption in tuxpaint_stamps(8)]


def tuxpaint_stamps(n: int = 8) -> list[tuple[Image.Image, str]]:
    """(RGB image as lipkit's loader gives it, caption) of the first n cached Tux Paint stamps;
    empty when the stamps are not in the cache (`lipkit data fetch tuxpaint`)."""
    from lipkit.data.images import open_image
    from lipkit.data.tuxpaint import load_tuxpaint

    try:
        items = load_tuxpaint(fetch_if_missing=False)
    except Exception:  # not fetched here
        return []
    step = max(1, len(items) // n)
    return [(open_image(it.image), it.caption) for it in items[::step][:n]]


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())
