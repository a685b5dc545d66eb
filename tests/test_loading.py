"""lipkit.load: run and checkpoint directories give the trainer's model, its evaluation transform
and its tokenizer; `lipkit train --init` starts a new run from a model's weights."""
import numpy as np
import pytest
import torch
from _interop_data import RGB, fashion_images, max_difference, tiny_run, tuxpaint_stamps
from PIL import Image

import lipkit
from lipkit.runs.directory import MODEL_FILE, CheckpointError, list_checkpoints
from lipkit.cli import main
from lipkit.data import fashion_mnist, load_fashion_mnist
from lipkit.eval.adapter import from_lipkit_run
from lipkit.runs.loading import LoadError, load_directory
from lipkit.tokenizer import Tokenizer

CAPTIONS = ["a photo of a dress.", "an ankle boot on a shelf!", "", "zebra ünïcode"]


@pytest.fixture(scope="module")
def xclip(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("loading") / "xclip", "objective.name=xclip", "train.save_every_steps=2")


@torch.no_grad()
def _embed(model, pixels, tokens):
    return model.encode_image(pixels, normalize=True), model.encode_text(tokens, normalize=True)


def test_run_and_checkpoint_directories_give_the_trainers_model(xclip):
    arrays = load_fashion_mnist("test")[0][:16]
    pixels = fashion_mnist.normalize(arrays)  # what training fed the model
    tokens = Tokenizer.load(xclip.run_dir)(CAPTIONS)
    want = _embed(xclip.model, pixels, tokens)
    final, earlier = list_checkpoints(xclip.run_dir)[-1], list_checkpoints(xclip.run_dir)[0]
    assert final.name == "step-00000003" and earlier.name == "step-00000002"
    for spec in (xclip.run_dir, str(final)):
        model, preprocess, tokenizer = lipkit.load(spec)
        assert not model.training and torch.equal(tokenizer(CAPTIONS), tokens)
        got = _embed(model, torch.stack([preprocess(Image.fromarray(a)) for a in arrays]), tokenizer(CAPTIONS))
        assert max_difference(got[0], want[0]) == 0 and max_difference(got[1], want[1]) == 0
    older = _embed(lipkit.load(earlier)[0], pixels, tokens)  # really that checkpoint: one step earlier
    assert max_difference(older[0], want[0]) > 1e-4


def test_preprocess_is_the_evaluation_transform(xclip, tmp_path):
    _, preprocess, _ = lipkit.load(xclip.run_dir)
    images = fashion_images(8)
    stacked = torch.stack([preprocess(im) for im in images])
    arrays = np.stack([np.asarray(im) for im in images])
    assert torch.equal(stacked, fashion_mnist.normalize(arrays))  # Fashion-MNIST's normalisation
    em = from_lipkit_run(xclip.run_dir)  # what `lipkit eval` runs
    assert em.preprocess == preprocess and torch.equal(em.images(arrays), stacked)
    # An RGB run: resize the shorter side to 32 (bicubic), centre crop, (x / 255 - 0.5) / 0.5.
    rgb = load_directory(tiny_run(tmp_path / "rgb", *RGB).run_dir)
    photo = (tuxpaint_stamps(1) or [(Image.fromarray(np.arange(45 * 60 * 3, dtype=np.uint8).reshape(45, 60, 3)), "")])[0][0]
    w, h = photo.size
    size = (32, int(32 * h / w)) if w <= h else (int(32 * w / h), 32)
    resized = photo.resize(size, Image.Resampling.BICUBIC)
    left, top = round((size[0] - 32) / 2), round((size[1] - 32) / 2)
    by_hand = torch.from_numpy(np.asarray(resized.crop((left, top, left + 32, top + 32)), dtype=np.float32))
    by_hand = (by_hand.permute(2, 0, 1) / 255 - 0.5) / 0.5
    assert torch.allclose(rgb.preprocess(photo), by_hand, atol=1e-6)
    assert from_lipkit_run(rgb.path).preprocess == rgb.preprocess


def test_a_run_records_how_its_images_were_normalised(xclip, tmp_path):
    """data.normalization says what training did, and lipkit.load repeats it: Fashion-MNIST's own
    statistics for its native tensors; data.image_mean / image_std for a grayscale tower trained
    through the image transform (such a run's images were once evaluated with Fashion-MNIST's)."""
    assert load_directory(xclip.run_dir).config.data.normalization == "fashion-mnist"
    digits = tiny_run(tmp_path / "digits", "data.source=digits", "data.image_mean=[0.25]", "data.image_std=[0.5]")
    loaded = load_directory(digits.run_dir)
    assert loaded.config.data.normalization == "mean-std"
    white = Image.fromarray(np.full((28, 28), 255, dtype=np.uint8))
    assert torch.allclose(loaded.preprocess(white), torch.full((1, 28, 28), (1 - 0.25) / 0.5))


def test_foreign_specs_and_missing_directories_are_one_line_errors(tmp_path):
    with pytest.raises(LoadError, match="lipkit import hf:some/model OUT"):
        lipkit.load("hf:some/model")
    with pytest.raises(CheckpointError, match="not a lipkit run directory"):
        lipkit.load(tmp_path / "nothing")


def _init(init_dir, objective: str, out, *overrides: str) -> int:
    args = ["train", "--init", str(init_dir), "--out", str(out), "--set", f"objective.name={objective}"]
    for o in ("train.steps=0", "train.progress=false", "data.train_limit=256", *overrides):
        args += ["--set", o]
    return main(args)


def test_init_starts_a_new_run_from_a_models_weights(xclip, tmp_path, capsys):
    clip_run = tmp_path / "clip-from-xclip"
    assert _init(xclip.run_dir, "clip", clip_run) == 0
    assert "note: left out of" in capsys.readouterr().out  # the prototype heads clip does not use
    model, _, tokenizer = lipkit.load(clip_run)
    assert model.heads == {"clip"}
    pixels, tokens = fashion_mnist.normalize(load_fashion_mnist("test")[0][:8]), tokenizer(CAPTIONS)
    assert torch.equal(tokens, Tokenizer.load(xclip.run_dir)(CAPTIONS))  # its tokenizer, not a new one
    got, want = _embed(model, pixels, tokens), _embed(xclip.model, pixels, tokens)
    assert max_difference(got[0], want[0]) == 0 and max_difference(got[1], want[1]) == 0

    # clip -> xclip: fresh prototype heads, said so
    assert _init(clip_run, "xclip", tmp_path / "xclip-from-clip") == 0
    assert "note: initialised fresh (not in" in capsys.readouterr().out
    assert lipkit.load(tmp_path / "xclip-from-clip")[0].heads == {"clip", "prototypes"}

    # towers that differ are refused, naming the weights; nothing is written
    assert _init(xclip.run_dir, "clip", tmp_path / "bad", "model.text.width=64") == 2
    assert "does not fit this config" in capsys.readouterr().err
    assert not (tmp_path / "bad" / MODEL_FILE).exists()
