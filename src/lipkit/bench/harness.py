"""Alternating step timing, FLOP counting, the matmul peak and peak memory."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from lipkit.bench.steps import Stepper


def time_alternating(steppers: list[Stepper], warmup: int, rounds: int, progress=None) -> dict[str, list[float]]:
    """Step each stepper in turn (A B A B ...) so drift in machine speed hits all alike; returns
    the step times of each after `warmup` untimed rounds."""
    for _ in range(warmup):
        for s in steppers:
            s.step()
    times = {s.name: [] for s in steppers}
    for r in range(rounds):
        for s in steppers:
            t0 = time.perf_counter()
            s.step()
            times[s.name].append(time.perf_counter() - t0)
        if progress:
            progress(r + 1, rounds)
    return times


def _cpu_flash_attention(query, key, value, *args, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_flash_attention_backward(grad_out, query, key, value, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# torch's counter knows the CUDA attention kernels but not the CPU flash kernel both trainers use.
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_attention_backward,
}


def counting_flops() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)


def flops_per_step(stepper: Stepper) -> int:
    """FLOPs of one full training step (forward and backward matmuls/convs/attention)."""
    counter = counting_flops()
    with counter:
        stepper.step()
    return counter.get_total_flops()


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times) / 1e9


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def peak_memory_mib(trainer: str, arch: str, steps: int = 3, batch_size: int | None = None,
                    full_captions: bool = False) -> float:
    """Peak tensor memory (see lipkit.bench.memory) of building `trainer`'s model and running `steps` steps, measured
    in a fresh process so the two trainers don't share a high-water mark."""
    cmd = [sys.executable, "-m", "lipkit.bench.memory", trainer, arch, str(steps), str(batch_size or 0),
           "full" if full_captions else "short"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]
