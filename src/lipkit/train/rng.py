"""Random state: the one seeding function (`seed_all`), and capture and restore of every generator
the loop uses, in a form that `torch.load(weights_only=True)` accepts (tensors, ints, tuples; no
numpy objects)."""
from __future__ import annotations

import random

import numpy as np
import torch

_MASK = (1 << 64) - 1


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64 chain): (seed, epoch, index) -> independent streams."""
    x = 0
    for p in parts:
        x = (x ^ (int(p) & _MASK)) & _MASK
        x = (x + 0x9E3779B97F4A7C15) & _MASK
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
        x ^= x >> 31
    return x >> 1


def seed_all(seed: int, *, devices: bool = False) -> None:
    """Seed python, numpy and torch's CPU generator (cheap: used once per data sample); with
    `devices`, every accelerator's generator too (torch.manual_seed: the loop's start, whose
    dropout may run on a GPU)."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    if devices:
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


def capture_host_rng() -> dict:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": (version, tuple(internal), gauss),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }


def restore_host_rng(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def capture_rng(device: torch.device) -> dict:
    """Host generators plus the CUDA generator of `device` (when it is a CUDA device)."""
    state = capture_host_rng()
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device) -> None:
    restore_host_rng(state)
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def capture_forward_rng(device: torch.device) -> tuple:
    """Only what a forward pass draws from (dropout): torch's CPU generator and the device's."""
    return (torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def restore_forward_rng(state: tuple, device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)
