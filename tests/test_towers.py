"""Pretrained towers (EfficientNet-Lite0, MiniLM), LiT locking, and the frozen-tower feature cache."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lipkit.config import ConfigError, ModelConfig, RunConfig, SourceConfig, TextConfig, VisionConfig
from lipkit.data import ImageTransform, TooManyBadSamplesError, feature_cache, open_pairs
from lipkit.models import LIPModel
from lipkit.models.efficientnet import EfficientNetLite0, SameConv2d, imagenet_classifier
from lipkit.runs import load_model
from lipkit.tokenizer import Tokenizer, build_tokenizer

# ImageNet classes
TABBY, TIGER_CAT, EGYPTIAN_CAT, ESPRESSO = 281, 282, 285, 967


@pytest.fixture(scope="module")
def lite0():
    return EfficientNetLite0(VisionConfig(name="efficientnet_lite0", image_size=224, channels=3, pretrained=True)).eval()


@pytest.fixture(scope="module")
def minilm():
    from lipkit.models.minilm import MiniLMTower

    return MiniLMTower(TextConfig(name="minilm", pretrained=True, context_length=32)).eval()


def test_same_padding_matches_tensorflow_rule():
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    conv.weight.data.fill_(1.0)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # TF "same", stride 2, 4 -> 2: total padding (2-1)*2+3-4 = 1, all of it after (bottom/right)
    expected = F.conv2d(F.pad(x, [0, 1, 0, 1]), conv.weight, stride=2)
    assert torch.equal(conv(x), expected)
    # windows rows 0-2 / 2-3(+pad), columns 0-2 / 2-3(+pad): 0+1+2+4+5+6+8+9+10 = 45, 10+11+14+15 = 50
    assert expected[0, 0].tolist() == [[45.0, 39.0], [66.0, 50.0]]
    odd = torch.ones(1, 1, 5, 5)  # 5 -> 3: padding (3-1)*2+3-5 = 2, one each side
    assert torch.equal(conv(odd), F.conv2d(F.pad(odd, [1, 1, 1, 1]), conv.weight, stride=2))


def test_lite0_classifies_skimage_photos(lite0):
    from skimage import data

    fc = imagenet_classifier()
    tf = ImageTransform(224)  # (x - 0.5) / 0.5, resize the shorter side, centre crop
    with torch.no_grad():
        x = torch.stack([tf(Image.fromarray(data.chelsea())), tf(Image.fromarray(data.coffee()))])
        features = lite0(x)
        top5 = fc(features).topk(5).indices.tolist()
    assert features.shape == (2, 1280) and lite0.width == 1280
    assert top5[0][0] in (TABBY, TIGER_CAT, EGYPTIAN_CAT) and {TABBY, EGYPTIAN_CAT} <= set(top5[0])
    assert top5[1][0] == ESPRESSO


def test_lite0_state_dict_is_the_packaged_one(lite0):
    from lipkit.models.efficientnet import packaged_state_dict

    packaged = packaged_state_dict(include_classifier=False)
    own = lite0.state_dict()
    assert set(own) == set(packaged) and len(own) == 294
    assert torch.equal(own["_blocks.15._project_conv.weight"], packaged["_blocks.15._project_conv.weight"])
    with pytest.raises(ValueError, match="channels must be 3"):
        EfficientNetLite0(VisionConfig(name="efficientnet_lite0", channels=1))


def test_minilm_matches_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    from lipkit.models.minilm import model_dir

    texts = ["A male black rhino.", "a photo of a cat", "Tux—the Linux mascot!"]
    tok = Tokenizer.minilm(32)
    with torch.no_grad():
        ours = F.normalize(minilm(tok(texts)), dim=-1)
    reference = SentenceTransformer(str(model_dir()), device="cpu").encode(texts, convert_to_tensor=True)
    assert ours.shape == (3, 384)
    assert torch.allclose(ours, reference.cpu(), atol=1e-5)


def test_minilm_semantics_and_padding(minilm):
    tok = Tokenizer.minilm(32)
    with torch.no_grad():
        e = F.normalize(minilm(tok(["a photo of a cat", "a picture of a kitten", "a truck on a highway"])), dim=-1)
        assert e[0] @ e[1] > e[0] @ e[2] + 0.2
        alone = minilm(tok(["a cat"]))
        padded = minilm(torch.cat([tok(["a cat"]), torch.zeros(1, 32, dtype=torch.long)])[:1])
    assert torch.allclose(alone, padded)


def test_minilm_tokenizer_interface(tmp_path):
    tok = build_tokenizer(TextConfig(name="minilm", context_length=8), ["ignored"])
    ids = tok(["A male black rhino.", "a b c d e f g h i j k"])
    assert ids.shape == (2, 8) and ids.dtype == torch.long
    assert ids[0].tolist()[:7] == [101, 1037, 3287, 2304, 24091, 1012, 102] and ids[0, 7] == 0  # [CLS] ... [SEP] [PAD]
    assert ids[1, -1] == 102  # cut so [SEP] survives
    assert tok.pad_id == 0 and tok.sos_id == 101 and tok.eos_id == 102 and tok.vocab_size == 30522
    tok.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    assert torch.equal(again(["A male black rhino."]), ids[:1]) and again.context_length == 8
    with pytest.raises(ValueError, match="context_length"):
        Tokenizer.minilm(1000)


# --------------------------------------------------------------------------- locking (LiT)
def small_cfg(**kw) -> ModelConfig:
    return ModelConfig(vision=VisionConfig(image_size=8, patch_size=4, channels=3, width=16, layers=3, heads=2),
                       text=TextConfig(vocab_size=300, context_length=12, width=16, layers=3, heads=2),
                       embed_dim=8, heads=["clip"], **kw)


def test_lock_freezes_all_but_the_last_blocks():
    model = LIPModel(small_cfg(lock_image=True, lock_image_unlocked_blocks=2, lock_text=True))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters()
                         if n.startswith(("vision.transformer.blocks.2.", "vision.norm_post", "image_projection",
                                          "text_projection", "log_logit_scale"))}
    assert not model.towers_frozen and model.text_locked and not model.image_locked
    model.train()
    assert not model.text.training and model.vision.transformer.blocks[2].training
    assert not model.vision.transformer.blocks[1].training
    with pytest.raises(ConfigError, match="model.lock_image_unlocked_blocks: must be between 0 and 5"):
        LIPModel(small_cfg(lock_image=True, lock_image_unlocked_blocks=6))


def test_locked_batchnorm_keeps_its_statistics():
    cfg = ModelConfig(vision=VisionConfig(name="efficientnet_lite0", image_size=32, channels=3),
                      text=TextConfig(vocab_size=300, context_length=12, width=16, layers=1, heads=2),
                      embed_dim=8, heads=["clip"], lock_image=True, lock_image_unlocked_blocks=1)
    model = LIPModel(cfg).train()
    head_bn, stem_bn = model.vision._bn1, model.vision._bn0
    assert head_bn.training and not stem_bn.training
    before = stem_bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32), torch.randint(3, 300, (2, 12)))
    assert torch.equal(stem_bn.running_mean, before)  # frozen stem: statistics untouched
    assert [n for n, p in model.vision.named_parameters() if p.requires_grad] == [
        "_conv_head.weight", "_bn1.weight", "_bn1.bias"]


# --------------------------------------------------------------------------- feature cache
@pytest.fixture
def tiny_pairs(tmp_path):
    root = tmp_path / "pairs"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"picture number {i}\nanother caption {i}")
    (root / "z_broken.png").write_bytes(b"broken")
    (root / "z_broken.txt").write_text("a broken picture")
    return root


def test_cached_features_equal_the_towers(tiny_pairs, tmp_path, monkeypatch):
    monkeypatch.setenv("LIPKIT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = LIPModel(small_cfg(lock_image=True, lock_text=True)).eval()
    assert model.towers_frozen
    ds = open_pairs(str(tiny_pairs), ImageTransform(8), seed=1)
    tok = Tokenizer.train(ds.possible_captions(), 300, 12)
    cached = feature_cache.cache_tower_features(ds, model, tok, batch_size=4)
    assert len(cached) == len(ds) == 11 and list((tmp_path / "cache" / "features").glob("*.safetensors"))
    for epoch in (0, 3):
        cached.set_epoch(epoch)
        for i in range(len(ds)):
            item = cached[i]
            assert item["caption"] == ds.caption(i, epoch) or item["skipped"]
            if item["skipped"]:  # the broken image: replaced by another record, reported
                assert "z_broken.png" in item["skipped"]
                continue
            with torch.no_grad():
                img = model.vision(ds.image_tensor(i)[None])[0]
                txt = model.text(tok([item["caption"]]))[0]
            assert torch.allclose(item["image_features"], img, atol=1e-6)
            assert torch.allclose(item["text_features"], txt, atol=1e-6)

    # a second run loads the stored features instead of computing them
    monkeypatch.setattr(feature_cache, "_compute", lambda *a, **k: pytest.fail("recomputed"))
    again = feature_cache.cache_tower_features(ds, model, tok)
    assert torch.equal(again.image_features[0], cached.image_features[0])


def test_forward_on_features_is_forward_on_inputs():
    torch.manual_seed(0)
    model = LIPModel(small_cfg(lock_image=True, lock_text=True))
    images, tokens = torch.randn(3, 3, 8, 8), torch.randint(3, 300, (3, 12))
    full = model(images, tokens)
    from_features = model(image_features=model.vision(images), text_features=model.text(tokens))
    assert torch.allclose(full["image_embeds"], from_features["image_embeds"])
    assert torch.allclose(full["text_embeds"], from_features["text_embeds"])


def test_random_transforms_are_not_cached(tiny_pairs):
    ds = open_pairs(str(tiny_pairs), ImageTransform(8, crop="random"))
    assert "random" in feature_cache.cacheable(ds)


def test_lit_training_end_to_end_with_cache_and_bad_samples(tiny_pairs, tmp_path, monkeypatch):
    from lipkit.train import train

    monkeypatch.setenv("LIPKIT_CACHE", str(tmp_path / "cache"))
    cfg = RunConfig()
    cfg.model = small_cfg(lock_image=True, lock_text=True)
    cfg.data.sources = [SourceConfig(path=str(tiny_pairs))]
    cfg.data.max_bad_fraction = 0.2
    cfg.train.steps, cfg.train.batch_size, cfg.train.warmup_steps, cfg.train.progress = 6, 4, 1, False
    cfg.train.log_every_steps = 3
    result = train(cfg, tmp_path / "run")
    assert result.steps == 6
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["bad_samples"] == 1 and report["skipped"][0]["where"].endswith("z_broken.png")
    assert list((tmp_path / "cache" / "features").glob("*.safetensors"))
    assert not any(p.requires_grad for p in result.model.vision.parameters())
    assert load_model(tmp_path / "run").towers_frozen
    cfg.data.max_bad_fraction = 0.05  # 1 bad of 11 is more than 5%: the run stops, naming the file
    with pytest.raises(TooManyBadSamplesError, match=r"max_bad_fraction 0.05; first: .*z_broken.png"):
        train(cfg, tmp_path / "run2")
