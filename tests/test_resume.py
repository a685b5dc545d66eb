"""Exact resume, end to end through the CLI: a run killed with SIGKILL at a random step (after at
least one checkpoint) and continued with `--resume latest` ends with bitwise the weights of an
uninterrupted run, with 0 and 1 data-loader workers; SIGTERM finishes the step, checkpoints and
exits 0, and that run resumes exactly too.

The runs use dropout, feature-cache accumulation, nCLIP's running centers (objective buffers) and
several epochs, so every piece of state a resume must restore is exercised."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from lipkit.runs.directory import list_checkpoints

pytestmark = pytest.mark.slow

STEPS, SAVE_EVERY = 32, 4
ARGS = [
    "--config", "fashion-tiny",
    *(f"--set={s}" for s in [
        f"train.steps={STEPS}", f"train.save_every_steps={SAVE_EVERY}", "train.batch_size=128",
        "train.accum_steps=2", "train.warmup_steps=3", "train.log_every_steps=1", "train.progress=false",
        "train.threads=1", "data.train_limit=640",  # 5 steps an epoch: resumes land mid-epoch
        "model.vision.width=32", "model.vision.layers=2", "model.vision.heads=2", "model.vision.dropout=0.1",
        "model.text.width=32", "model.text.layers=2", "model.text.heads=2", "model.text.dropout=0.1",
        "model.embed_dim=32", "objective.name=xclip", "objective.nclip.balance=center",
        "model.prototypes.num_prototypes=32", "model.prototypes.hidden_dim=64", "model.prototypes.bottleneck_dim=16",
        "data.caption_noise=0.3",  # loosely paired captions are drawn by (seed, epoch, index): exact too
    ]),
]


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "lipkit", "train", *args]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _logged_steps(run: Path) -> list[int]:
    import json

    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except ValueError:  # a line being written
            pass
    return steps


def _start(run: Path, *extra: str) -> subprocess.Popen:
    log = open(run.parent / f"{run.name}.stderr", "w")
    # its own session: SIGKILL reaches the data-loader workers too, and nothing else
    return subprocess.Popen(_cmd(*ARGS, *extra, "--out", str(run)), stdout=subprocess.DEVNULL, stderr=log,
                            env=_env(), start_new_session=True)


def _wait_for_step(proc: subprocess.Popen, run: Path, step: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while len(_logged_steps(run)) < step:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before step {step}: "
                        f"{(run.parent / f'{run.name}.stderr').read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no step {step} within {timeout} s")
        time.sleep(0.002)


def _resume(run: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(_cmd("--out", str(run), "--resume", "latest"), capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _assert_same_weights(a: Path, b: Path) -> None:
    for name in ("model.safetensors", "objective.safetensors"):
        x, y = load_file(a / name), load_file(b / name)
        assert x.keys() == y.keys() and len(x) > 0
        differ = [k for k in x if not (x[k].dtype == y[k].dtype and x[k].shape == y[k].shape and (x[k] == y[k]).all())]
        assert not differ, f"{name}: not bitwise equal: {differ[:5]}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("resume") / "uninterrupted"
    done = subprocess.run(_cmd(*ARGS, "--out", str(run)), capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def test_uninterrupted_run_keeps_the_last_checkpoints(uninterrupted):
    kept = [p.name for p in list_checkpoints(uninterrupted)]
    assert kept == [f"step-{s:08d}" for s in (STEPS - 2 * SAVE_EVERY, STEPS - SAVE_EVERY, STEPS)]  # keep_checkpoints=3
    assert _logged_steps(uninterrupted) == list(range(1, STEPS + 1))
    # the run directory holds the newest weights, identical to the last checkpoint's
    assert (uninterrupted / "model.safetensors").read_bytes() == (
        uninterrupted / "checkpoints" / f"step-{STEPS:08d}" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("workers", [0, 1])
def test_sigkill_at_a_random_step_then_resume_is_bitwise_exact(workers, uninterrupted, tmp_path):
    kill_at = random.randint(SAVE_EVERY + 1, STEPS - 10)
    run = tmp_path / "killed"
    proc = _start(run, f"--set=data.num_workers={workers}")
    _wait_for_step(proc, run, kill_at)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_after = max(_logged_steps(run))
    assert SAVE_EVERY <= killed_after < STEPS, killed_after
    assert list_checkpoints(run), "no checkpoint before the kill"

    _resume(run)
    _assert_same_weights(run, uninterrupted)
    # metrics.jsonl continues without repeating the steps logged after the last checkpoint
    assert _logged_steps(run) == list(range(1, STEPS + 1)), f"killed after step {killed_after}"


def test_sigterm_finishes_the_step_checkpoints_exits_0_and_resumes_exactly(uninterrupted, tmp_path):
    run = tmp_path / "stopped"
    proc = _start(run)
    _wait_for_step(proc, run, random.randint(2, STEPS - 12))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    stderr = (tmp_path / "stopped.stderr").read_text()
    stopped_at = max(_logged_steps(run))
    assert stopped_at < STEPS
    assert f"stopped by SIGTERM after step {stopped_at}" in stderr
    assert f"Resume with: lipkit train --out {run} --resume latest" in stderr
    assert list_checkpoints(run)[-1].name == f"step-{stopped_at:08d}"  # checkpointed where it stopped

    _resume(run)
    _assert_same_weights(run, uninterrupted)
