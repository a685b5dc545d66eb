"""Precision (autocast bf16/fp16 with fp32 losses, GradScaler for fp16, fp64 for parity checks) and
torch.compile, on CPU."""
from __future__ import annotations

import pytest
import torch

from lipkit.config import ConfigError, load_config
from lipkit.models import LIPModel
from lipkit.objectives.clip import ClipObjective
from lipkit.train import train
from lipkit.train.accumulation import forward_backward
from lipkit.train.precision import Precision, resolve_precision

TINY = ["train.batch_size=32", "train.warmup_steps=1", "train.log_every_steps=1", "train.progress=false",
        "data.train_limit=256", "train.lr=2.0e-3", "model.vision.width=32", "model.vision.layers=1",
        "model.vision.heads=2", "model.text.width=32", "model.text.layers=1", "model.text.heads=2",
        "model.embed_dim=16"]


def test_auto_is_bf16_on_cuda_and_fp32_on_cpu():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda", 0)) == "bf16"
    assert resolve_precision("fp16", torch.device("cpu")) == "fp16"
    with pytest.raises(ConfigError, match="train.precision"):
        resolve_precision("fp8", torch.device("cpu"))
    assert Precision.build("fp16", torch.device("cpu")).scaler is not None
    assert Precision.build("bf16", torch.device("cpu")).scaler is None


class RecordingClip(ClipObjective):
    def terms(self, outputs):
        self.seen = outputs["image_embeds"].dtype
        return super().terms(outputs)


@pytest.mark.parametrize("name,model_dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)])
@pytest.mark.parametrize("k", [1, 2])
def test_towers_run_in_low_precision_and_the_loss_in_fp32(name, model_dtype, k):
    cfg = load_config("fashion-tiny", TINY + ["model.heads=[clip]"])
    torch.manual_seed(0)
    model = LIPModel(cfg.model)
    objective = RecordingClip()
    images, tokens = torch.randn(8, 1, 28, 28), torch.randint(1, 100, (8, 12))
    batches = [(images[i::k], tokens[i::k]) for i in range(k)]
    precision = Precision.build(name, torch.device("cpu"))
    terms, finite = forward_backward(model, objective, batches, {"clip"}, precision)
    assert finite and objective.seen == model_dtype
    assert terms["loss"].dtype == torch.float32
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)
    if name != "fp16":  # fp16 gradients are of the loss x 65536 and may overflow: the scaler's job
        assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_training_learns(precision, tmp_path):
    cfg = load_config("fashion-tiny", TINY + ["train.steps=12", f"train.precision={precision}"])
    result = train(cfg, tmp_path / "run")
    from lipkit.train.metrics_log import read_metrics

    log = read_metrics(tmp_path / "run" / "metrics.jsonl")
    losses = [r["loss"] for r in log]
    assert all(isinstance(v, float) for v in losses)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.05, losses
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in result.model.parameters())
    state = torch.load(tmp_path / "run" / "checkpoints" / "step-00000012" / "trainer.pt", weights_only=True)
    if precision == "fp16":
        assert 0 < state["scaler"]["scale"] <= 65536.0
    else:
        assert state["scaler"] is None


@pytest.mark.slow
def test_compile_trains_like_eager(tmp_path):
    base = TINY + ["train.steps=3", "train.threads=0"]
    eager = train(load_config("fashion-tiny", base), tmp_path / "eager").model.state_dict()
    result = train(load_config("fashion-tiny", base + ["train.compile=true"]), tmp_path / "compiled")
    assert result.model._compiled_call_impl is not None  # the model really ran compiled
    compiled = result.model.state_dict()
    for key, want in eager.items():
        torch.testing.assert_close(compiled[key], want, rtol=1e-3, atol=1e-5, msg=key)
