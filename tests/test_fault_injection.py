"""The CI version of `make faults` (benchmarks/faults.py): a fashion-tiny xCLIP run killed with
SIGKILL at 3 random moments (a step, a checkpoint write, a step) and resumed with
`--resume latest` ends bitwise equal to an uninterrupted run, every step logged once."""
from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _faults_module():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "faults.py"
    spec = importlib.util.spec_from_file_location("lipkit_faults", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_three_random_kills_resume_bitwise_exact(tmp_path):
    faults = _faults_module()
    seed = random.randrange(1 << 31)
    points = faults.kill_and_resume(3, seed, tmp_path, log=lambda line: None)
    assert [p.kind for p in points] == ["step", "checkpoint", "step"]
    for p in points:
        where = f"seed {seed}, killed {p.moment}: {p.notes}"
        assert p.killed and p.resume_status == 0, where
        assert p.bitwise_equal and p.metrics_complete, where
        assert p.resumed_at <= p.last_logged_step, where
