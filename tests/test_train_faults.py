"""Faults: non-finite losses are skipped and counted (objective state untouched) until more than
train.max_bad_steps in a row stop the run; a checkpoint of another architecture is refused with
the keys, nothing overwritten; checkpoint directories are atomic and pruned; bad CLI use is one line."""
from __future__ import annotations

import pytest
import torch

from lipkit.cli import main
from lipkit.config import load_config
from lipkit.objectives import register
from lipkit.objectives.clip import ClipObjective
from lipkit.runs.directory import (
    CheckpointError,
    list_checkpoints,
    load_trainer_state,
    prune_checkpoints,
    resolve_resume,
    write_checkpoint,
)
from lipkit.train import NonFiniteLossError, train
from lipkit.train.metrics_log import read_metrics

TINY = ["train.steps=6", "train.batch_size=32", "train.warmup_steps=1", "train.log_every_steps=1",
        "train.progress=false", "data.train_limit=128", "model.vision.width=32", "model.vision.layers=1",
        "model.vision.heads=2", "model.text.width=32", "model.text.layers=1", "model.text.heads=2",
        "model.embed_dim=16"]


class NanOnCalls(ClipObjective):
    """CLIP whose loss is NaN on the listed calls; counts its calls in a buffer (objective state a
    skipped step must not keep)."""

    nan_calls: set[int] = set()

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.count = 0

    def terms(self, outputs):
        out = super().terms(outputs)
        if self.count in self.nan_calls:
            out["contrastive_loss"] = out["contrastive_loss"] * float("nan")
        self.count += 1
        self.calls += 1
        return out


register("test-nan-on-calls")(lambda cfg: NanOnCalls())


def _snapshot(run_dir):
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_non_finite_steps_are_skipped_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(NanOnCalls, "nan_calls", {2, 3})
    cfg = load_config("fashion-tiny", TINY + ["objective.name=test-nan-on-calls", "train.max_bad_steps=2"])
    result = train(cfg, tmp_path / "run")
    assert result.steps == 6 and result.bad_steps == 2
    log = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["loss"] == "nan" for r in log] == [False, False, True, True, False, False]
    assert [r["bad_steps"] for r in log] == [0, 0, 1, 2, 2, 2]
    assert log[3]["lr"] != log[2]["lr"]  # the schedule moves on
    # the skipped steps' objective state was rolled back: 4 counted calls, not 6
    from safetensors.torch import load_file

    assert int(load_file(tmp_path / "run" / "objective.safetensors")["calls"]) == 4
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


class NanOnCallsWithPrototypes(NanOnCalls):
    """The same, with the prototype heads run (their BatchNorm statistics move in the forward)."""

    required_heads = frozenset({"clip", "prototypes"})


register("test-nan-on-calls-prototypes")(lambda cfg: NanOnCallsWithPrototypes())


def test_a_skipped_step_leaves_the_heads_batch_norm_statistics_as_they_were(tmp_path, monkeypatch):
    monkeypatch.setattr(NanOnCalls, "nan_calls", {2, 3})
    sets = ["objective.name=test-nan-on-calls-prototypes", "train.max_bad_steps=2", "model.heads=[clip,prototypes]",
            "model.prototypes.hidden_dim=32", "model.prototypes.bottleneck_dim=8", "model.prototypes.num_prototypes=16"]
    result = train(load_config("fashion-tiny", TINY + sets), tmp_path / "run")
    assert result.bad_steps == 2
    norms = [m for m in result.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 2 and all(int(m.num_batches_tracked) == 4 for m in norms)  # 6 steps, 2 skipped


def test_too_many_non_finite_steps_in_a_row_stop_with_the_step_and_terms(tmp_path, monkeypatch):
    monkeypatch.setattr(NanOnCalls, "nan_calls", set(range(1, 100)))
    cfg = load_config("fashion-tiny", TINY + ["objective.name=test-nan-on-calls", "train.max_bad_steps=2"])
    with pytest.raises(NonFiniteLossError) as err:
        train(cfg, tmp_path / "run")
    msg = str(err.value)
    assert "at step 4, 3 steps in a row (more than train.max_bad_steps=2)" in msg
    assert "contrastive_loss=nan" in msg and "loss=nan" in msg


def test_checkpoint_of_another_architecture_is_refused_and_nothing_is_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--config", "fashion-tiny", *(f"--set={s}" for s in TINY + ["train.steps=2"]), "--out", str(run)]
    assert main(args) == 0
    before = _snapshot(run)
    capsys.readouterr()
    assert main(args + ["--set=model.text.width=48", "--resume", "latest"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("lipkit: error: ")
    assert "checkpoint is for another architecture" in err and "text.token_embed.weight" in err
    assert _snapshot(run) == before


def test_cli_resume_mistakes_are_one_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "none"), "--resume", "latest"]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "none")]) == 2
    assert "--config is required" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(["train", "--config", "fashion-tiny", *(f"--set={s}" for s in TINY + ["train.steps=1"]),
                 "--out", str(run)]) == 0
    assert main(["train", "--config", "fashion-tiny", "--out", str(run)]) == 2
    assert "--resume latest" in capsys.readouterr().err  # the message says how to continue it


def test_trainer_state_loads_with_weights_only(tmp_path):
    cfg = load_config("fashion-tiny", TINY + ["train.steps=3"])
    train(cfg, tmp_path / "run")
    path = list_checkpoints(tmp_path / "run")[-1] / "trainer.pt"
    state = torch.load(path, weights_only=True)
    assert state["progress"]["step"] == 3 and state["progress"]["samples"] == 96
    assert state["progress"]["position"] == {"epoch": 0, "samples_in_epoch": 96}
    assert len(state["rng"]) == 1 and set(state["rng"][0]) >= {"python", "numpy", "torch"}
    assert state["scaler"] is None  # fp32: no GradScaler
    assert len(state["optimizer"]["state"]) > 10 and state["scheduler"]["last_epoch"] == 3
    assert load_trainer_state(path.parent)["layout"]["batch_size"] == 32


def test_checkpoint_directories_are_atomic_and_pruned(tmp_path):
    def write(text):
        return lambda p: p.write_text(text)

    for step in (1, 2, 3):
        write_checkpoint(tmp_path, step, {"trainer.pt": write(str(step)), "model.safetensors": write("m")})

    def fail(p):
        p.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_checkpoint(tmp_path, 4, {"model.safetensors": write("m"), "trainer.pt": fail})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000001", "step-00000002", "step-00000003"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    # a temporary directory left by a killed writer is ignored, then cleared by pruning
    stale = tmp_path / "checkpoints" / ".step-00000009.abc.tmp"
    stale.mkdir()
    (stale / "trainer.pt").write_text("partial")
    assert resolve_resume("latest", tmp_path).name == "step-00000003"
    # the same step again replaces it whole
    write_checkpoint(tmp_path, 3, {"trainer.pt": write("again")})
    assert (tmp_path / "checkpoints" / "step-00000003" / "trainer.pt").read_text() == "again"
    assert not (tmp_path / "checkpoints" / "step-00000003" / "model.safetensors").exists()
    prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    assert not stale.exists()
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        resolve_resume(str(tmp_path / "nowhere"), tmp_path)
    assert resolve_resume(str(tmp_path), tmp_path / "other").name == "step-00000003"  # a run dir: its newest


def test_first_signal_sets_a_flag_and_a_second_one_interrupts():
    import os
    import signal

    from lipkit.train.signals import StopSignals

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.received == "SIGTERM"  # the loop finishes its step, then checkpoints
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
