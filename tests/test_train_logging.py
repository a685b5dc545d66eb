"""metrics.jsonl fields, the data-wait warning, time-based checkpoints, metrics truncation on
resume, TensorBoard."""
from __future__ import annotations

import itertools

import pytest

from lipkit.config import ConfigError, load_config
from lipkit.runs.directory import list_checkpoints
from lipkit.train import checkpointing, train
from lipkit.train.metrics_log import Throughput, read_metrics, truncate_metrics
from lipkit.train.optim import lr_factor

TINY = ["train.batch_size=32", "train.warmup_steps=1", "train.log_every_steps=1", "train.progress=false",
        "data.train_limit=128", "model.vision.width=32", "model.vision.layers=1", "model.vision.heads=2",
        "model.text.width=32", "model.text.layers=1", "model.text.heads=2", "model.embed_dim=16",
        "model.prototypes.num_prototypes=16", "model.prototypes.hidden_dim=32", "model.prototypes.bottleneck_dim=8"]


XCLIP = TINY + ["train.steps=5", "objective.name=xclip", "train.grad_clip_norm=1.0", "train.log_every_steps=2"]


@pytest.fixture(scope="module")
def xclip_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("log") / "run"
    train(load_config("fashion-tiny", XCLIP), run)
    return run


def test_every_logged_step_has_throughput_lr_terms_and_diagnostics(xclip_run):
    log = read_metrics(xclip_run / "metrics.jsonl")
    assert [r["step"] for r in log] == [2, 4, 5]  # every 2 steps, and the last
    for r in log:
        assert r["samples"] == 32 * r["step"] and r["epoch"] == (r["step"] * 32) // 128
        assert r["samples_per_s"] > 0 and 0 <= r["data_wait_share"] <= 1
        # the lr the next step will use (warm-up 1, cosine to 0 at step 5)
        assert r["lr"] == pytest.approx(1e-3 * lr_factor(r["step"], load_config("fashion-tiny", XCLIP).train))
        assert r["bad_steps"] == 0 and r["grad_norm"] > 0
        for key in ("loss", "clip/contrastive_loss", "clip/logit_scale", "nclip/align_loss", "nclip/smooth_loss",
                    "nclip/sharp_loss", "nclip/distinct_prototypes", "nclip/mean_max_prob",
                    "nclip/usage_entropy_ratio", "nclip/argmax_agreement", "nclip/image_mi_ratio",
                    "nclip/text_mi_ratio"):
            assert isinstance(r[key], float), key
        # xclip: weights 1 and 1, nCLIP's lambda_smooth 1 and lambda_sharp 1
        assert r["loss"] == pytest.approx(r["clip/contrastive_loss"] + r["nclip/align_loss"] + r["nclip/smooth_loss"]
                                          + r["nclip/sharp_loss"], rel=1e-5)


def test_data_wait_warning_names_the_fix_once_after_start_up():
    t = Throughput(warn_share=0.2, num_workers=0)
    t.add(32, 1e9)  # first window: start-up (workers spawning) never warns
    assert t.window()[1] is None
    t.add(32, 1e9)
    figures, warning = t.window()
    assert figures["data_wait_share"] > 0.2
    assert "data.num_workers (now 0)" in warning and "train.data_wait_warn_share 20%" in warning
    t.add(32, 1e9)
    assert t.window()[1] is None  # once per run
    quiet = Throughput(warn_share=0.2, num_workers=4)
    quiet.window()
    quiet.add(32, 0.0)
    assert quiet.window()[1] is None


def test_checkpoints_every_n_minutes(tmp_path, monkeypatch):
    ticks = itertools.count(step=30)  # a clock that moves 30 s each time it is read
    monkeypatch.setattr(checkpointing, "_clock", lambda: float(next(ticks)))
    cfg = load_config("fashion-tiny", TINY + ["train.steps=6", "train.save_every_minutes=1", "train.keep_checkpoints=10"])
    train(cfg, tmp_path / "run")
    # read at start (0), then once a step (30, 60 -> save at 90, 120, 150 -> save ...), and at the end
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == [f"step-{s:08d}" for s in (2, 4, 6)]


def test_truncate_metrics_drops_steps_after_the_checkpoint_and_a_cut_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "loss": 1.2}\n{"step": 4, "lo')
    truncate_metrics(path, 2)
    assert [r["step"] for r in read_metrics(path)] == [1, 2]


def test_tensorboard(tmp_path):
    cfg = load_config("fashion-tiny", TINY + ["train.steps=2", "train.tensorboard=true"])
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="train.tensorboard: the 'tensorboard' package is not installed"):
            train(cfg, tmp_path / "run")
        return
    train(cfg, tmp_path / "run")
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
