"""Mixed precision: autocast for the model's forward, GradScaler for fp16, losses in fp32.

The objective runs outside autocast and every objective promotes its inputs to at least fp32
(`lipkit.objectives.base.at_least_fp32`), so only the towers and heads run in bf16/fp16.
fp64 is not mixed precision: parameters, inputs and losses are all float64 (parity tests and
debugging, where float32 rounding would blur a comparison).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from lipkit.config import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto` is bf16 on CUDA and fp32 elsewhere."""
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name not in DTYPES:
        raise ConfigError(f"train.precision: expected one of auto, {', '.join(DTYPES)}, got {name!r}")
    return name


@dataclass
class Precision:
    name: str  # fp32 | bf16 | fp16, resolved
    device: torch.device
    scaler: torch.amp.GradScaler | None  # fp16 only

    @classmethod
    def build(cls, name: str, device: torch.device) -> "Precision":
        name = resolve_precision(name, device)
        scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None
        return cls(name, device, scaler)

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def param_dtype(self) -> torch.dtype:
        """What parameters (and float inputs) are stored in: float32, except under fp64."""
        return torch.float64 if self.name == "fp64" else torch.float32

    def autocast(self):
        """Context for the model's forward pass (a no-op in fp32 and fp64)."""
        if self.name in ("fp32", "fp64"):
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
