"""Tiny fashion-tiny runs through the command line, for the tests that break them on purpose
(tests/test_run_safety.py, tests/test_input_faults.py): the run, a snapshot of its files, the one
error line a failure must print, and an objective whose loss is always NaN."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lipkit.cli import main
from lipkit.objectives import register
from lipkit.objectives.clip import ClipObjective
from lipkit.runs.lock import LOCK_FILE

TINY = ["train.batch_size=32", "train.warmup_steps=1", "train.log_every_steps=1", "train.progress=false",
        "data.train_limit=128", "model.vision.width=32", "model.vision.layers=1", "model.vision.heads=2",
        "model.text.width=32", "model.text.layers=1", "model.text.heads=2", "model.embed_dim=16"]
ALWAYS_NAN = "test-always-nan"  # objective.name of AlwaysNan


def train_tiny(run: Path, *sets: str, extra=()) -> int:
    return main(["train", "--config", "fashion-tiny", *(f"--set={s}" for s in [*TINY, *sets]), "--out", str(run),
                 *extra])


def snapshot(run: Path, times: bool = False) -> dict:
    """Every file of a run and its bytes (with `times`, also when each was last written); the lock
    file, which only says who holds it, aside."""
    return {str(p.relative_to(run)): (p.read_bytes(), p.stat().st_mtime_ns if times else 0)
            for p in sorted(run.rglob("*")) if p.is_file() and p.name != LOCK_FILE}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("lipkit: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


class AlwaysNan(ClipObjective):
    def terms(self, outputs):
        out = super().terms(outputs)
        out["contrastive_loss"] = out["contrastive_loss"] * float("nan")
        return out


register(ALWAYS_NAN)(lambda cfg: AlwaysNan())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A 4-step run with checkpoints at steps 2 and 4 (copied by the tests that change it)."""
    run = tmp_path_factory.mktemp("runs") / "done"
    assert train_tiny(run, "train.steps=4", "train.save_every_steps=2") == 0
    return run


@pytest.fixture
def old_run(finished_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    return run
