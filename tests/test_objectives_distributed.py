"""Distributed parity (DESIGN.md, "Principles"): for every objective, the loss (mean over ranks),
each loss term and diagnostic, every parameter's DDP-averaged gradient and the objective's buffers
on 2 and 4 gloo processes equal one process on the concatenated batch.

float64 end to end, so the only differences are summation order (~1e-15) and rtol = 1e-5 has no
slack to hide a missing term. Each world size is spawned once; the workers loop over the cases."""
from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from _dist_workers import BROKEN_CASES, CASES, global_batch, run_case, worker

RTOL, ATOL = 1e-5, 1e-10


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, torch.Tensor]]:
    images, tokens = global_batch()
    return {case: run_case(case, images, tokens) for case in CASES}


@pytest.fixture(scope="module", params=[2, 4], ids=lambda n: f"world{n}")
def distributed(request, tmp_path_factory) -> list[dict[str, dict[str, torch.Tensor]]]:
    size = request.param
    tmp = tmp_path_factory.mktemp(f"world{size}")
    mp.spawn(worker, args=(size, str(tmp / "init"), str(tmp)), nprocs=size, join=True)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(size)]


def _mismatches(expected: dict, got: dict) -> list[str]:
    bad = []
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        try:
            torch.testing.assert_close(got[key], value, rtol=RTOL, atol=ATOL)
        except AssertionError as e:
            bad.append(f"{key}: {str(e).splitlines()[-1].strip()}")
    return bad


@pytest.mark.multiprocess
@pytest.mark.parametrize("case", list(CASES))
def test_matches_single_process_full_batch(case, reference, distributed):
    expected = reference[case]
    keys = expected.keys()
    assert any(k.endswith("/loss") for k in keys) and any("/grad/" in k for k in keys)
    assert any(v.abs().sum() > 0 for k, v in expected.items() if "/grad/" in k)
    if "center" in case:
        assert {"buffer/center_image", "buffer/center_text"} <= keys
    if case in ("siglip/chunked", "siglip/unchunked"):  # SigLIP's own t and b are checked too
        assert all(expected[f"step0/grad/objective.{p}"].abs() > 0 for p in ("log_scale", "bias"))
    failures = []
    for rank, results in enumerate(distributed):
        failures += [f"rank {rank}: {m}" for m in _mismatches(expected, results[case])]
    assert not failures, f"{case} differs from one process on the full batch:\n" + "\n".join(failures)


@pytest.mark.multiprocess
@pytest.mark.parametrize("broken", list(BROKEN_CASES))
def test_parity_check_rejects_known_distributed_bugs(broken, reference, distributed):
    expected = reference[BROKEN_CASES[broken][0]]
    assert _mismatches(expected, distributed[0][broken]), f"{broken} passed the parity check"
