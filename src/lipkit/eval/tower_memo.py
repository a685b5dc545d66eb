"""Reuse a frozen tower's outputs across evaluations (many runs sharing one locked tower).

A LiT grid trains dozens of heads on the same locked towers; without this, every evaluation runs
the pretrained image and text towers over the same images and prompts again, which costs far more
than the heads. `TowerMemo.install(model)` wraps the `forward` of each fully locked tower so that
an input seen before (same tower weights, same input bytes) returns the stored output.

Keys are content digests (BLAKE2b of the tower's state dict and of the input tensor), so a tower
trained or changed in any way never hits another tower's entries. Only use it in evaluation: the
stored outputs carry no autograd graph.
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn


def tensor_digest(t: torch.Tensor, h=None) -> str:
    h = h or hashlib.blake2b(digest_size=20)
    t = t.detach().cpu().contiguous().reshape(-1)
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()


def module_digest(module: nn.Module) -> str:
    h = hashlib.blake2b(digest_size=20)
    for name, value in module.state_dict().items():
        h.update(name.encode())
        tensor_digest(value, h)
    return h.hexdigest()


class TowerMemo:
    """(tower digest, input digest) -> output, shared by every model it is installed on."""

    def __init__(self, max_entries: int = 4096):
        self.outputs: dict[tuple[str, str], torch.Tensor] = {}
        self.max_entries = max_entries
        self.hits = self.misses = 0

    def install(self, model: nn.Module) -> list[str]:
        """Memoize the towers of `model` that are fully locked; returns their attribute names."""
        installed = []
        for attr, locked in (("vision", "image_locked"), ("text", "text_locked")):
            tower = getattr(model, attr, None)
            if tower is None or not getattr(model, locked, False):
                continue
            self._wrap(tower, module_digest(tower))
            installed.append(attr)
        return installed

    def _wrap(self, tower: nn.Module, tower_key: str) -> None:
        forward = tower.forward

        def memoized(x, *args, **kwargs):
            if args or kwargs or torch.is_grad_enabled() or tower.training:
                return forward(x, *args, **kwargs)
            key = (tower_key, tensor_digest(x))
            out = self.outputs.get(key)
            if out is None:
                self.misses += 1
                out = forward(x)
                if len(self.outputs) < self.max_entries:
                    self.outputs[key] = out
            else:
                self.hits += 1
            return out.to(x.device, copy=True)  # a copy: callers may modify it in place

        tower.forward = memoized
