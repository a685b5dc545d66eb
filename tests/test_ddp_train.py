"""End-to-end multi-process training (gloo, CPU): 2 processes give the weights of 1 process on the
same global batch, under DDP and FSDP2, with feature-cache accumulation, an objective that has
its own parameters and heads no objective reads; only rank 0 writes; a 2-process run resumed from a checkpoint ends bitwise
equal to the uninterrupted one.

The runs use train.precision=fp64: in float32, 10 Adam steps already leave elementwise differences
of ~1e-5 from summation order alone (biases that start at zero), which would leave no margin; in
float64 they are ~1e-12, so rel 1e-5 only fails on a real error."""
from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from _train_workers import CASES, RESUMED, STEPS, case_config, worker
from lipkit.train import train

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]
RTOL = 1e-5
# A parameter whose gradient is 0 but for fp64 rounding (under nCLIP alone the heads' BatchNorm
# makes the loss blind to the towers' last norm bias) still moves under Adam, by lr * g / eps with
# g ~ 1e-14: ~2e-11 a step here. So differences are judged on a scale of at least 1e-4 (an
# absolute tolerance of 1e-9); a real difference moves a weight by ~lr = 2e-3.
SCALE_FLOOR = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return out


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for case in CASES:
            train(case_config(case), out / case)
    finally:
        torch.set_num_threads(threads)
    return out


def _weights(run_dir) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v for k, v in load_file(run_dir / "model.safetensors").items()}
    state.update({f"objective.{k}": v for k, v in load_file(run_dir / "objective.safetensors").items()})
    return state


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_match_one(case, two_processes, one_process):
    single, multi = _weights(one_process / case), _weights(two_processes / f"{case}-rank0")
    assert single.keys() == multi.keys()
    bad = []
    for key, want in single.items():
        got = multi[key]
        scale = want.abs().max().clamp_min(SCALE_FLOOR)
        if (got - want).abs().max() > RTOL * scale:
            bad.append(f"{key}: max diff {(got - want).abs().max():.3g} (scale {scale:.3g})")
    assert not bad, f"{case}: 2 processes differ from 1:\n" + "\n".join(bad)
    if case.startswith("siglip"):  # the objective's own parameters were trained, and agree
        assert {"objective.log_scale", "objective.bias"} <= single.keys()
    # only rank 0 wrote anything
    assert not (two_processes / f"{case}-rank1").exists()
    log = (two_processes / f"{case}-rank0" / "metrics.jsonl").read_text().splitlines()
    assert len(log) == STEPS


@pytest.mark.parametrize("case", RESUMED)
def test_two_process_resume_is_bitwise_exact(case, two_processes):
    full, resumed = _weights(two_processes / f"{case}-rank0"), _weights(two_processes / f"{case}-resumed-rank0")
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full), [k for k in full if not torch.equal(full[k], resumed[k])]
