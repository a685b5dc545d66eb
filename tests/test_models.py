import math

import pytest
import torch

from lipkit.config import ModelConfig, PrototypeHeadConfig, TextConfig, VisionConfig
from lipkit.models import LIPModel
from lipkit.models.heads import PrototypeHead
from lipkit.runs.directory import CheckpointError, load_state_into, save_model


def tiny_cfg(heads=("clip", "prototypes"), causal=True, pooling="eos") -> ModelConfig:
    return ModelConfig(
        vision=VisionConfig(image_size=8, patch_size=4, channels=1, width=16, layers=2, heads=2),
        text=TextConfig(vocab_size=30, context_length=8, width=16, layers=2, heads=2, causal=causal, pooling=pooling),
        embed_dim=8,
        prototypes=PrototypeHeadConfig(hidden_dim=32, bottleneck_dim=8, num_prototypes=12),
        heads=list(heads),
    )


def batch(b=3):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(b, 1, 8, 8, generator=g)
    tokens = torch.tensor([[1, 5, 6, 2, 0, 0, 0, 0], [1, 7, 2, 0, 0, 0, 0, 0], [1, 8, 9, 10, 11, 2, 0, 0]])[:b]
    return images, tokens


def test_forward_dict_and_only_requested_heads():
    torch.manual_seed(0)
    model = LIPModel(tiny_cfg())
    images, tokens = batch()
    out = model(images, tokens, heads=["clip"])
    assert set(out) == {"image_features", "text_features", "image_embeds", "text_embeds", "logit_scale"}
    assert torch.allclose(out["image_embeds"].norm(dim=-1), torch.ones(3))
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)
    out = model(images, tokens, heads=["prototypes"])
    assert set(out) == {"image_features", "text_features", "image_protos", "text_protos"}
    assert out["image_protos"].shape == (3, 12)
    assert out["image_protos"].abs().max() <= 1 + 1e-6  # cosines to normalised prototypes


def test_prototype_head_is_cosine_to_normalised_prototypes():
    torch.manual_seed(0)
    head = LIPModel(tiny_cfg()).image_prototypes
    f = torch.randn(4, 16)
    z = torch.nn.functional.normalize(head.mlp(f), dim=-1)
    w = head.prototypes / head.prototypes.norm(dim=1, keepdim=True)
    assert torch.allclose(head(f), z @ w.T, atol=1e-6)
    assert not any(n.endswith("bias") for n, _ in head.named_parameters() if not n.startswith("mlp"))


def test_model_without_a_head_refuses_it():
    model = LIPModel(tiny_cfg(heads=["clip"]))
    images, tokens = batch()
    with pytest.raises(ValueError, match="no head"):
        model(images, tokens, heads=["prototypes"])
    assert not hasattr(model, "image_prototypes")


def test_causal_eos_pooling_ignores_tokens_after_eos_and_padding_columns():
    torch.manual_seed(0)
    model = LIPModel(tiny_cfg()).eval()
    images, tokens = batch()
    base = model.encode_text(tokens)
    # Trimming all-padding columns must be exact: a shorter tensor gives the same embeddings.
    assert torch.allclose(model.encode_text(tokens[:, :6]), base, atol=1e-6)
    # Changing an earlier (non-pad) token must change the embedding (causal attention sees it).
    changed = tokens.clone()
    changed[0, 1] = 9
    assert not torch.allclose(model.encode_text(changed)[0], base[0])


def test_bidirectional_mean_pooling_masks_padding():
    torch.manual_seed(0)
    model = LIPModel(tiny_cfg(causal=False, pooling="mean")).eval()
    images, tokens = batch()
    one = model.text(tokens[1:2, :3])  # the caption alone, no padding at all
    padded = model.text(tokens[:, :6])[1:2]  # the same caption inside a padded batch
    assert torch.allclose(one, padded, atol=1e-5)


def test_encode_normalize_and_wrong_shapes():
    model = LIPModel(tiny_cfg()).eval()
    images, tokens = batch()
    assert torch.allclose(model.encode_image(images, normalize=True).norm(dim=-1), torch.ones(3), atol=1e-6)
    with pytest.raises(ValueError, match=r"images of shape \[B, 1, 8, 8\], got \[3, 3, 8, 8\]"):
        model.encode_image(torch.zeros(3, 3, 8, 8))
    with pytest.raises(ValueError, match=r"tokens of shape \[B, L<=8\], got \[3, 9\]"):
        model.encode_text(torch.ones(3, 9, dtype=torch.long))


def test_logit_scale_clamped_to_max():
    model = LIPModel(tiny_cfg())
    with torch.no_grad():
        model.log_logit_scale.fill_(math.log(500.0))
    model.clamp_logit_scale()
    assert model.log_logit_scale.exp().item() == pytest.approx(100.0, rel=1e-6)


def test_checkpoint_from_another_architecture_names_the_keys(tmp_path):
    save_model(LIPModel(tiny_cfg(heads=["clip"])), tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()
    other = LIPModel(tiny_cfg(heads=["clip", "prototypes"]))
    with pytest.raises(CheckpointError, match=r"another architecture: missing image_prototypes\.mlp\.0\.weight"):
        load_state_into(other, tmp_path / "model.safetensors")
    wider = tiny_cfg(heads=["clip"])
    wider.embed_dim = 4
    with pytest.raises(CheckpointError, match=r"shape differs for image_projection.weight \[8, 16\] vs \[4, 16\]"):
        load_state_into(LIPModel(wider), tmp_path / "model.safetensors")
    assert (tmp_path / "model.safetensors").read_bytes() == before


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_state_into(LIPModel(tiny_cfg()), tmp_path / "model.safetensors")


def test_patch_dropout_keeps_cls_and_a_random_subset_of_patches_in_training_only():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg.vision.image_size, cfg.vision.patch_size, cfg.vision.patch_dropout = 16, 4, 0.5  # 16 patches -> keep 8
    model = LIPModel(cfg)
    seen = []
    model.vision.transformer.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    images = torch.randn(2, 1, 16, 16)
    model.eval()
    model.encode_image(images)
    model.train()
    model.encode_image(images)
    full, dropped = seen
    assert full.shape == (2, 17, 16) and dropped.shape == (2, 9, 16)
    for b in range(2):
        assert torch.allclose(dropped[b, 0], full[b, 0])  # the cls token, always first
        kept = [int((full[b, 1:] - row).abs().sum(1).argmin()) for row in dropped[b, 1:]]
        assert torch.allclose(dropped[b, 1:], full[b, 1:][kept], atol=1e-6)  # rows of the full set
        assert len(set(kept)) == 8  # without repeats


def test_patch_dropout_out_of_range_is_refused():
    cfg = tiny_cfg()
    cfg.vision.patch_dropout = 1.0
    with pytest.raises(ValueError, match="patch_dropout must be in"):
        LIPModel(cfg)


def test_adapter_starts_as_identity_and_feeds_every_head():
    cfg = tiny_cfg()
    cfg.adapter_layers = 2
    model = LIPModel(cfg)
    images, tokens = batch()
    out = model(images, tokens)
    torch.testing.assert_close(out["image_features"], model.vision(images))  # zero-initialised output layers
    with torch.no_grad():
        for block in list(model.image_adapter) + list(model.text_adapter):
            block.fc_out.weight.normal_(std=0.1)
    out = model(images, tokens)
    trunk = model.image_trunk(images)
    expected = model.vision(images)
    for block in model.image_adapter:
        expected = expected + block.fc_out(torch.nn.functional.gelu(block.fc_in(block.norm(expected))))
    torch.testing.assert_close(trunk, expected)
    torch.testing.assert_close(out["image_features"], trunk)
    torch.testing.assert_close(model.encode_image(images), model.image_projection(trunk))
    torch.testing.assert_close(out["text_protos"], model.text_prototypes(model.text_trunk(tokens)))
    # Cached tower features (LiT) go through the adapter too.
    cached = model(image_features=model.vision(images), text_features=model.text(tokens))
    torch.testing.assert_close(cached["image_embeds"], out["image_embeds"])


def test_fixed_logit_scale_is_a_buffer_outside_the_optimizer(tmp_path):
    cfg = tiny_cfg()
    cfg.learn_logit_scale, cfg.init_logit_scale = False, 50.0
    model = LIPModel(cfg)
    assert "log_logit_scale" not in dict(model.named_parameters())
    assert "log_logit_scale" in model.state_dict()
    images, tokens = batch()
    assert model(images, tokens)["logit_scale"].item() == pytest.approx(50.0)
    save_model(model, tmp_path)
    again = LIPModel(cfg)
    load_state_into(again, tmp_path / "model.safetensors")
    assert again.log_logit_scale.item() == pytest.approx(math.log(50.0))


@pytest.mark.parametrize("causal", [True, False])
def test_last_block_on_the_pooled_row_only_matches_the_full_block(causal):
    """The towers compute their last block for the cls / EOS row only; outputs and every
    gradient must equal running the whole last block and then pooling."""
    torch.manual_seed(0)
    model = LIPModel(tiny_cfg(causal=causal)).double()
    images, tokens = batch()
    images = images.double()

    def full_vision(x):
        v = model.vision
        h = v.patchify(x).flatten(2).transpose(1, 2) + v.pos_embed[:, 1:]
        cls = (v.cls_token + v.pos_embed[:, :1]).expand(h.shape[0], -1, -1)
        return v.norm_post(v.transformer(v.norm_pre(torch.cat([cls, h], 1)))[:, 0])

    def full_text(t):
        m = model.text
        n = int((t != 0).any(0).nonzero().max()) + 1
        t = t[:, :n]
        valid = t != 0
        h = m.token_embed(t) + m.pos_embed[:, :n]
        h = m.transformer(h, causal=True) if causal else m.transformer(h, attn_mask=valid[:, None, None, :])
        return m.norm_final(h)[torch.arange(len(t)), valid.sum(1) - 1]

    for ours, reference, x in ((model.vision, full_vision, images), (model.text, full_text, tokens)):
        out, ref = ours(x), reference(x)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        g = torch.randn_like(out)
        params = [p for p in ours.parameters()]
        grads = torch.autograd.grad((out * g).sum(), params, allow_unused=True)
        grads_ref = torch.autograd.grad((ref * g).sum(), params, allow_unused=True)
        for a, b in zip(grads, grads_ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_global_batchnorm_is_batchnorm_in_one_process():
    from lipkit.models.batch_norm import GlobalBatchNorm1d

    torch.manual_seed(0)
    ours, ref = GlobalBatchNorm1d(6).double(), torch.nn.BatchNorm1d(6).double()
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5), ours.bias.uniform_(-0.5, 0.5)
    ref.load_state_dict(ours.state_dict())
    for _ in range(3):  # training: batch statistics, running statistics updated (unbiased variance)
        x = (torch.randn(10, 6, dtype=torch.float64) * 3 + 1).requires_grad_(True)
        x_ref = x.detach().clone().requires_grad_(True)
        w = torch.randn(10, 6, dtype=torch.float64)
        (ours(x) * w).sum().backward()
        (ref(x_ref) * w).sum().backward()
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-12, atol=1e-12)
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=1e-12, atol=0)
    ours.eval(), ref.eval()  # evaluation: running statistics
    x = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="at least 2 samples"):
        ours.train()(torch.randn(1, 6, dtype=torch.float64))


def test_global_batchnorm_cumulative_average_and_fp32_statistics_under_bf16():
    from lipkit.models.batch_norm import GlobalBatchNorm1d

    torch.manual_seed(0)
    ours, ref = GlobalBatchNorm1d(4, momentum=None).double(), torch.nn.BatchNorm1d(4, momentum=None).double()
    for _ in range(3):  # momentum None: the running statistics are the plain average of the batches'
        x = torch.randn(8, 4, dtype=torch.float64) * 2 + 3
        ours(x), ref(x)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.running_var, ref.running_var, rtol=1e-12, atol=1e-12)
    # bf16 input far from zero (a large shared component): the output is bf16, its per-channel mean
    # is as close to 0 as bf16 output can be (statistics taken in fp32, not rounded to bf16 first)
    bn = GlobalBatchNorm1d(64, affine=False)
    x = (3 + 0.05 * torch.randn(256, 64)).to(torch.bfloat16)
    y = bn(x)
    assert y.dtype == torch.bfloat16
    assert y.float().mean(0).abs().max() < 0.02


def test_prototype_head_batchnorm_removes_the_shared_component():
    """In training the heads' hidden layer is normalised over the batch, so features that share a
    large common offset (what the towers give at initialisation) still give varied prototypes."""
    torch.manual_seed(0)
    cfg = PrototypeHeadConfig(hidden_dim=64, bottleneck_dim=16, num_prototypes=32)
    x = torch.randn(256, 24) * 0.01 + torch.randn(1, 24) * 10  # tiny spread around a shared point
    with_bn = PrototypeHead(24, cfg)
    without = PrototypeHead(24, PrototypeHeadConfig(hidden_dim=64, bottleneck_dim=16, num_prototypes=32,
                                                    batch_norm=False))
    spread = lambda head: head(x).argmax(1).unique().numel()  # noqa: E731
    assert spread(with_bn) > 8 and spread(without) == 1
    assert "mlp.0.bias" not in with_bn.state_dict() and "mlp.0.bias" in without.state_dict()
