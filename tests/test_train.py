"""End to end: short real training runs on Fashion-MNIST for every objective."""
import json

import pytest
import torch

from lipkit.config import load_config
from lipkit.data import FashionMNISTPairs
from lipkit.runs.loading import load_run
from lipkit.train import train
from lipkit.train.optim import lr_factor, param_groups

pytestmark = pytest.mark.slow

SHORT = ["train.steps=20", "train.batch_size=128", "train.warmup_steps=5", "train.log_every_steps=1",
         "train.progress=false", "data.train_limit=4096", "model.prototypes.num_prototypes=64"]


@pytest.mark.parametrize("objective", ["clip", "nclip", "xclip", "clip_reg"])
def test_short_run_learns_and_reloads_identically(objective, tmp_path):
    torch.manual_seed(0)
    cfg = load_config("fashion-tiny", SHORT + [f"objective.name={objective}"])
    result = train(cfg, tmp_path / "run")
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 21))
    losses = [r["loss"] for r in log]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.05, losses
    if objective in ("nclip", "xclip"):
        prefix = "nclip/" if objective == "xclip" else ""
        for key in ("distinct_prototypes", "mean_max_prob", "usage_entropy_ratio", "argmax_agreement"):
            assert prefix + key in log[-1]

    model, tokenizer, saved_cfg = load_run(tmp_path / "run")
    assert sorted(saved_cfg.model.heads) == sorted(result.model.heads)
    assert saved_cfg.model.text.vocab_size == tokenizer.vocab_size
    data = FashionMNISTPairs("test", limit=16)
    images, captions = data.images_tensor(), [data.caption(i) for i in range(16)]
    result.model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), result.model.encode_image(images))
        assert torch.equal(model.encode_text(tokenizer(captions)), result.model.encode_text(tokenizer(captions)))


def test_same_seed_same_weights(tmp_path):
    cfg = load_config("fashion-tiny", SHORT[:1] + ["train.steps=3"] + SHORT[1:])
    a = train(cfg, tmp_path / "a").model.state_dict()
    b = train(cfg, tmp_path / "b").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_existing_run_is_not_overwritten(tmp_path):
    from lipkit.train import RunDirError

    cfg = load_config("fashion-tiny", SHORT[:1] + ["train.steps=2"] + SHORT[1:])
    train(cfg, tmp_path / "run")
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(RunDirError, match="already holds a run"):
        train(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before


def test_weight_decay_skips_norms_biases_and_logit_scale():
    from lipkit.models import LIPModel

    cfg = load_config("fashion-tiny", ["model.heads=[clip]"])
    model = LIPModel(cfg.model)
    decay, no_decay = param_groups([model], 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert "log_logit_scale" in no_decay_names
    assert "vision.norm_post.weight" in no_decay_names and "vision.patchify.bias" in no_decay_names
    assert all(not n.endswith("bias") and "norm" not in n and "logit" not in n for n in (names[id(p)] for p in decay["params"]))
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


def test_fused_adamw_matches_the_adamw_formula():
    """build_optimizer's (fused) AdamW step against the decoupled-decay formula, written out."""
    from lipkit.config import TrainConfig
    from lipkit.train.optim import build_optimizer

    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    t = TrainConfig(lr=0.01, weight_decay=0.1, beta1=0.9, beta2=0.98, eps=1e-6)
    opt = build_optimizer([lin], t)
    assert opt.defaults["fused"]
    w = lin.weight.detach().clone()
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    for step in range(1, 4):
        opt.zero_grad()
        (lin(torch.randn(5, 4)) ** 2).sum().backward()
        g = lin.weight.grad.detach().clone()
        opt.step()
        m = t.beta1 * m + (1 - t.beta1) * g
        v = t.beta2 * v + (1 - t.beta2) * g * g
        m_hat, v_hat = m / (1 - t.beta1 ** step), v / (1 - t.beta2 ** step)
        w = w * (1 - t.lr * t.weight_decay) - t.lr * m_hat / (v_hat.sqrt() + t.eps)
        torch.testing.assert_close(lin.weight.detach(), w, rtol=1e-5, atol=1e-7)


def test_warmup_then_cosine():
    cfg = load_config("fashion-tiny", ["train.steps=110", "train.warmup_steps=10", "train.min_lr_ratio=0.1"])
    t = cfg.train
    assert lr_factor(0, t) == pytest.approx(0.1)
    assert lr_factor(9, t) == pytest.approx(1.0)
    assert lr_factor(60, t) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the cosine
    assert lr_factor(110, t) == pytest.approx(0.1)


@pytest.mark.slow
def test_demo_table_shows_xclip_prototypes(tmp_path, monkeypatch):
    """`make demo`'s table: both objectives' accuracies, and xCLIP's prototype diagnostics."""
    from lipkit import demo

    monkeypatch.setattr(demo, "load_config", lambda name, overrides: load_config(
        name, overrides + ["data.train_limit=512", "train.batch_size=64", "train.progress=false",
                           "eval.test_limit=200", "eval.linear_train_limit=200"]))
    rows = demo.run_demo(tmp_path, steps=2)
    assert [r["objective"] for r in rows] == ["clip", "xclip"]
    column = "image prototypes (I/log C, NMI, used)"
    assert rows[0][column] == "–"
    mi, nmi, used = rows[1][column].split(", ")
    assert 0 <= float(mi) <= 1 and 0 <= float(nmi) <= 1 and int(used) >= 1
    assert (tmp_path / "summary.md").read_text().startswith("| objective")
