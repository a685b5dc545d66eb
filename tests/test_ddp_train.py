"""End-to-end multi-process training (gloo, CPU): 2 processes give the weights of 1 process on the
same global batch, under DDP and FSDP2, with feature-cache accumulation, an objective that has
its own parameters and heads no objective reads; only rank 0 writes; a 2-process run resumed from a checkpoint ends bitwise
equal to the uninterrupted one.

The runs use train.precision=fp64: in float32, 10 Adam steps already leave elementwise differences
of ~1e-5 from summation order alone (biases that start at zero), which would leave no margin; in
float64 they are ~1e-12, so rel 1e-5 only fails on a real error."""
from __future__ import annotations


import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from _train_workers import CASES, RESUMED, STEPS, bad_data_worker, case_config, worker
from lipkit.train import train
from _ports import free_port

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]
RTOL = 1e-5
# A parameter whose gradient is 0 but for fp64 rounding (under nCLIP alone the heads' BatchNorm
# makes the loss blind to the towers' last norm bias) still moves under Adam, by lr * g / eps with
# g ~ 1e-14: ~2e-11 a step here. So differences are judged on a scale of at least 1e-4 (an
# absolute tolerance of 1e-9); a real difference moves a weight by ~lr = 2e-3.
SCALE_FLOOR = 1e-4


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
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


def _pairs_with_unreadable_images(root, good: int, bad: int):
    from PIL import Image

    root.mkdir(parents=True)
    for i in range(good):
        Image.new("RGB", (12, 12), (7 * i, 0, 0)).save(root / f"{i:02d}.png")
        (root / f"{i:02d}.txt").write_text(f"image {i}")
    for i in range(bad):
        (root / f"bad{i}.png").write_bytes(b"not an image")
        (root / f"bad{i}.txt").write_text(f"bad {i}")
    return root


@pytest.mark.parametrize("limit", [0.1, 0.5])
def test_bad_samples_are_pooled_over_processes(tmp_path, limit):
    """30 good and 6 unreadable pairs, 12 steps of 4 (an epoch is 9): every bad sample is met, each
    by one of the 2 processes. Pooled, 6 of 36 is above 10%: both processes stop at the same batch
    with the same message (alone, neither would reach 4 of 36, and one stopping alone would hang
    the other); under 50% the run ends and rank 0's report lists the 6."""
    import json

    data = _pairs_with_unreadable_images(tmp_path / "pairs", good=30, bad=6)
    mp.spawn(bad_data_worker, args=(2, free_port(), str(tmp_path), str(data), limit), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    if limit == 0.1:
        first, second = (r["error"].split(" (all listed in")[0] for r in results)  # rank 0 writes the report
        assert first == second and "of 36 samples" in first and "more than data.max_bad_fraction 0.1" in first
    else:
        assert results == [{"steps": 12}, {"steps": 12}]
        assert sorted(s["where"].rsplit("/", 1)[1] for s in report["skipped"]) == [f"bad{i}.png" for i in range(6)]
        assert report["bad_samples"] == 6 and report["dataset_size"] == 36

