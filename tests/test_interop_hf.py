"""lipkit -> Hugging Face CLIP -> lipkit, checked with transformers' own CLIPModel and
CLIPProcessor (offline), on Fashion-MNIST test images, Tux Paint stamps and real captions; a
foreign-style HF CLIP (OpenAI's tokenizer layout, QuickGELU) imported; parts that cannot be
exported refused in one line."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _interop_data import (
    captions,
    fashion_images,
    gray_and_rgb_runs,
    lipkit_embeddings,
    max_difference,
    tuxpaint_stamps,
)

import lipkit
from lipkit.cli import main
from lipkit.config import ModelConfig, TextConfig, VisionConfig
from lipkit.interop import hf
from lipkit.interop.export import export_run
from lipkit.interop.importer import import_model
from lipkit.interop.layout import InteropError, check_exportable, transposed
from lipkit.runs.loading import load_directory
from lipkit.tokenizer import Tokenizer

os.environ["HF_HUB_OFFLINE"] = "1"
transformers = pytest.importorskip("transformers")
TOL = 1e-5


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return gray_and_rgb_runs(tmp_path_factory.mktemp("hf"))


def _hf(path):
    model = transformers.CLIPModel.from_pretrained(str(path), local_files_only=True).eval()
    return model, transformers.CLIPProcessor.from_pretrained(str(path), local_files_only=True)


@torch.no_grad()
def _hf_embeddings(model, processor, images, texts, context_length):
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    batch = processor(text=texts, padding="max_length", max_length=context_length, truncation=True, return_tensors="pt")
    image = model.get_image_features(pixel_values=pixels).pooler_output
    text = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
    return pixels, batch["input_ids"], F.normalize(image, dim=-1), F.normalize(text, dim=-1)


def test_fashion_tiny_round_trip_through_hf(runs, tmp_path):
    run = runs["gray"]
    report = export_run(run.run_dir, "hf", tmp_path / "hf")
    assert report.agreement is not None and any("prototype heads are left out" in n for n in report.notes)
    model, processor = _hf(tmp_path / "hf")
    loaded = load_directory(run.run_dir)
    # Gray images: the digits as they are, and Tux Paint stamps as lipkit's grayscale tower sees them.
    images = fashion_images(12) + [im.convert("L") for im, _ in tuxpaint_stamps(6)]
    texts = captions()
    ours_px, ours_img, ours_txt = lipkit_embeddings(run.model, loaded.preprocess, loaded.tokenizer, images, texts)
    pixels, ids, hf_img, hf_txt = _hf_embeddings(model, processor, images, texts, loaded.tokenizer.context_length)
    assert torch.equal(ids, loaded.tokenizer(texts))  # the HF tokenizer gives lipkit's ids
    assert max_difference(pixels, ours_px.expand(-1, 3, -1, -1)) < 1e-6  # the image processor = the eval transform
    assert max_difference(hf_img, ours_img) <= TOL and max_difference(hf_txt, ours_txt) <= TOL

    # ... and back: the imported run embeds as the trainer's model did, through its own preprocess
    imported = import_model(f"hf:{tmp_path / 'hf'}", tmp_path / "back")
    assert imported.agreement.image <= TOL
    back, back_preprocess, back_tokenizer = lipkit.load(tmp_path / "back")
    assert back.cfg.vision.channels == 3 and back.heads == {"clip"} and back.cfg.text.pooling == "eos"
    _, img, txt = lipkit_embeddings(back, back_preprocess, back_tokenizer, images, texts)
    assert max_difference(img, ours_img) <= TOL and max_difference(txt, ours_txt) <= TOL


def _floor_crop(image, size: int, mean=0.5, std=0.5) -> torch.Tensor:
    """lipkit's transform with the centre-crop offset rounded down, as transformers crops."""
    from lipkit.data.transforms import normalize, resize_shorter, to_tensor

    resized = resize_shorter(image, size)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return normalize(to_tensor(resized.crop((left, top, left + size, top + size))), [mean] * 3, [std] * 3)


def test_rgb_run_round_trip_on_colour_stamps(runs, tmp_path):
    """Colour stamps resized to 32 px. lipkit (like torchvision and open_clip) rounds the centre-crop
    offset, transformers rounds it down: where the resized side exceeds 32 by 4k + 3 pixels, the
    HF processor's crop is one pixel off lipkit's, and only there."""
    stamps = tuxpaint_stamps(12)
    if not stamps:
        pytest.skip("Tux Paint stamps are not in the cache (lipkit data fetch tuxpaint)")
    run = runs["rgb"]
    export_run(run.run_dir, "hf", tmp_path / "hf")
    model, processor = _hf(tmp_path / "hf")
    loaded = load_directory(run.run_dir)
    images, texts = [im for im, _ in stamps], [c for _, c in stamps]
    ours_px, ours_img, ours_txt = lipkit_embeddings(run.model, loaded.preprocess, loaded.tokenizer, images, texts)
    pixels, _, hf_img, hf_txt = _hf_embeddings(model, processor, images, texts, loaded.tokenizer.context_length)
    assert max_difference(hf_txt, ours_txt) <= TOL
    with torch.no_grad():  # the model on the same pixels
        same_px = F.normalize(model.get_image_features(pixel_values=ours_px).pooler_output, dim=-1)
    assert max_difference(same_px, ours_img) <= TOL
    shifted = [i for i, im in enumerate(images) if not torch.allclose(_floor_crop(im, 32), ours_px[i], atol=1e-6)]
    assert 0 < len(shifted) < len(images)  # both cases occur among these stamps
    for i in range(len(images)):
        if i in shifted:
            assert max_difference(pixels[i], _floor_crop(images[i], 32)) < 1e-5
        else:
            assert max_difference(pixels[i], ours_px[i]) < 1e-5 and max_difference(hf_img[i], ours_img[i]) <= TOL


def test_a_transposed_projection_fails_the_check(runs, tmp_path, monkeypatch):
    """fashion-tiny's text projection is square (128 x 128): a missing transpose keeps every shape,
    and only the embeddings show it."""
    def wrong(cfg):
        return [transposed(r.ours, r.theirs[0]) if r.ours == "text_projection.weight" else r for r in right(cfg)]

    right = hf.rules
    monkeypatch.setattr(hf, "rules", wrong)
    with pytest.raises(InteropError, match=r"embeddings differ from lipkit's .*captions"):
        export_run(runs["gray"].run_dir, "hf", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()  # nothing left behind


def _openai_style_clip(path):
    """A random HF CLIP laid out like OpenAI's: byte-level BPE with `</w>`, id 0 = "!", the end
    token the highest id and the padding token, QuickGELU (transformers' default)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    merges = [("t", "h"), ("th", "e</w>"), ("o", "f</w>"), ("p", "h"), ("ph", "o")]
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = transformers.CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges)
    config = transformers.CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 24, "eos_token_id": len(vocab) - 1,
                     "bos_token_id": len(vocab) - 2},
        vision_config={"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": 32, "patch_size": 8},
        projection_dim=48)
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    image_processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    model.save_pretrained(str(path))
    transformers.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(path))
    return model, tokenizer


def test_an_openai_style_hf_clip_imports(tmp_path):
    hf_model, hf_tokenizer = _openai_style_clip(tmp_path / "src")
    assert hf_tokenizer.convert_tokens_to_ids("!") == 0 and hf_tokenizer.pad_token == "<|endoftext|>"
    report = import_model(f"hf:{tmp_path / 'src'}", tmp_path / "run")
    assert report.agreement.text <= TOL
    model, preprocess, tokenizer = lipkit.load(tmp_path / "run")
    cfg = model.cfg
    assert (cfg.vision.activation, cfg.text.activation, cfg.text.pooling) == ("quick_gelu", "quick_gelu", "argmax")
    texts = ["the photo of a cat!! yes", "wow!?", "the"]  # "!" inside a word piece is id 0, lipkit's padding id
    batch = hf_tokenizer(texts, padding="max_length", max_length=24, return_tensors="pt")
    assert (batch["input_ids"][:2] == 0).any(1).all() and torch.equal(batch["input_ids"][:2, :6], tokenizer(texts)[:2, :6])
    with torch.no_grad():
        want = F.normalize(hf_model.get_text_features(**batch).pooler_output, dim=-1)
        got = model.encode_text(tokenizer(texts), normalize=True)
    assert max_difference(got, want) <= TOL
    # With lipkit's default pooling (the last non-zero id) the "!" rows would pool elsewhere.
    model.text.cfg.pooling = "eos"
    with torch.no_grad():
        assert max_difference(model.encode_text(tokenizer(texts), normalize=True), want) > 1e-2


def test_parts_without_a_counterpart_are_refused():
    heads = frozenset({"clip"})
    cases = {
        "model.vision.name=efficientnet_lite0": ModelConfig(vision=VisionConfig(name="efficientnet_lite0")),
        "model.text.name=minilm": ModelConfig(text=TextConfig(name="minilm")),
        "model.adapter_layers=2": ModelConfig(adapter_layers=2),
        "model.text.pooling=mean": ModelConfig(text=TextConfig(pooling="mean")),
    }
    for part, cfg in cases.items():
        with pytest.raises(InteropError, match=part):
            check_exportable(cfg, heads, "hf")
    with pytest.raises(InteropError, match="no CLIP heads"):
        check_exportable(ModelConfig(), frozenset({"prototypes"}), "open_clip")
    with pytest.raises(InteropError, match="model.text.causal=false"):
        check_exportable(ModelConfig(text=TextConfig(causal=False)), heads, "open_clip")
    old_layout = Tokenizer.train(captions(), 300, 16)  # <eos> at id 2, as runs before eos_last
    with pytest.raises(InteropError, match="eos_last=true"):
        hf.check_tokenizer(ModelConfig(), old_layout)


def test_cli_errors_are_one_line_and_keep_what_is_there(runs, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(runs["gray"].run_dir), "--to", "hf", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lipkit: error:") and "already exists" in err[0]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["import", "hf:" + str(tmp_path / "no-model"), str(tmp_path / "x")]) == 2
    assert "not a local Hugging Face model directory" in capsys.readouterr().err
    assert main(["export", str(runs["gray"].run_dir), "--to", "hf", str(tmp_path / "ok")]) == 0
    assert "exported" in capsys.readouterr().out and (tmp_path / "ok" / "model.safetensors").is_file()
    (tmp_path / "ok" / "model.safetensors").unlink()  # an incomplete folder: transformers' OSError, one line
    assert main(["import", "hf:" + str(tmp_path / "ok"), str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lipkit: error: hf:{tmp_path / 'ok'}: transformers cannot load it: ")
    assert not (tmp_path / "y").exists()


def test_exported_weights_are_renamed_not_recomputed(runs, tmp_path):
    """Spot checks of the mapping against the trainer's tensors: fused q/k/v split in order, the
    patch bias folded into the patch positions, luma-weighted RGB channels."""
    from safetensors.torch import load_file

    export_run(runs["gray"].run_dir, "hf", tmp_path / "hf")
    theirs = load_file(str(tmp_path / "hf" / "model.safetensors"))
    ours = runs["gray"].model.state_dict()
    qkv = ours["text.transformer.blocks.1.attn.qkv.weight"]
    assert torch.equal(theirs["text_model.encoder.layers.1.self_attn.k_proj.weight"], qkv[128:256])
    pos = theirs["vision_model.embeddings.position_embedding.weight"]
    assert torch.allclose(pos[1:], ours["vision.pos_embed"][0, 1:] + ours["vision.patchify.bias"])
    assert torch.equal(pos[0], ours["vision.pos_embed"][0, 0])
    conv = theirs["vision_model.embeddings.patch_embedding.weight"]
    assert torch.allclose(conv.sum(1, keepdim=True), ours["vision.patchify.weight"], atol=1e-6)
    assert torch.allclose(conv[:, 1] / conv[:, 0], torch.full_like(conv[:, 0], 0.587 / 0.299), rtol=1e-4)
    assert np.allclose(float(theirs["logit_scale"]), float(ours["log_logit_scale"]))
