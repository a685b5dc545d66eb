"""`lipkit bench max-batch`: the largest batch of a training config that fits a memory budget,
and the accumulation steps that reach a target effective batch.

Peak memory is measured, not modelled: a training step runs in a fresh process at two small
batches, a line through them predicts the budget's batch, and the prediction is checked by
measuring it (stepping down until it fits)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass


@dataclass
class MaxBatchPlan:
    config: str
    memory_gib: float
    max_batch: int
    measured_gib: float
    target_batch: int
    accum_steps: int
    micro_batch: int
    samples: dict

    def lines(self) -> list[str]:
        lines = [f"{self.config}: largest batch within {self.memory_gib:g} GiB: {self.max_batch} "
                 f"(measured peak {self.measured_gib:.2f} GiB)"]
        if self.target_batch:
            lines.append(f"  effective batch {self.target_batch}: train.batch_size={self.target_batch} "
                         f"train.accum_steps={self.accum_steps} (micro-batches of {self.micro_batch})")
        lines.append("  measured: " + ", ".join(f"batch {b}: {g:.2f} GiB" for b, g in sorted(self.samples.items())))
        return lines


def measure_gib(config: str, batch: int, overrides: list[str]) -> float:
    cmd = [sys.executable, "-m", "lipkit.bench.step_memory", config, str(batch), *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"measuring batch {batch} failed: {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_gib"]


def plan(config: str, memory_gib: float, target_batch: int = 0, overrides: list[str] = (),
         probe: tuple[int, int] = (8, 32), measure=measure_gib) -> MaxBatchPlan:
    overrides = list(overrides)
    samples = {b: measure(config, b, overrides) for b in probe}
    (b1, m1), (b2, m2) = sorted(samples.items())
    per_sample = max((m2 - m1) / (b2 - b1), 1e-9)
    batch = max(1, int((memory_gib - (m1 - per_sample * b1)) / per_sample))
    while batch >= 1:
        samples[batch] = measure(config, batch, overrides)
        if samples[batch] <= memory_gib:
            break
        batch = int(batch * memory_gib / samples[batch] * 0.98)
    if batch < 1:
        raise RuntimeError(f"{config}: even batch 1 needs more than {memory_gib} GiB")
    accum = math.ceil(target_batch / batch) if target_batch else 1
    while target_batch and target_batch % accum:
        accum += 1  # the effective batch must split into equal micro-batches
    micro = target_batch // accum if target_batch else batch
    return MaxBatchPlan(config, memory_gib, batch, samples[batch], target_batch, accum, micro, samples)
