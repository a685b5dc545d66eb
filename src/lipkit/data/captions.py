"""Captions from templates: a reproducible per-(seed, epoch, index) template choice."""
from __future__ import annotations

from collections.abc import Sequence

_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def sample_hash(seed: int, epoch: int, index: int, salt: int = 0) -> int:
    """A 64-bit hash of (seed, epoch, index, salt): independent per sample and per purpose."""
    x = _splitmix64(seed & _MASK)
    for v in (epoch, index, salt):
        x = _splitmix64(x ^ (v & _MASK))
    return x


# salts of sample_hash for loosely paired captions (data.caption_noise)
_NOISE_DRAW, _NOISE_CLASS = 101, 102


def caption_class(seed: int, epoch: int, index: int, label: int, classes: Sequence[int], noise: float) -> int:
    """The class whose caption item `index` gets in `epoch`: its own `label`, or, for a share
    `noise` of the items (data.caption_noise), another of `classes` drawn uniformly. A hash of
    (seed, epoch, index), so a resumed run and any worker draw the same."""
    if noise <= 0 or len(classes) < 2:
        return label
    if sample_hash(seed, epoch, index, _NOISE_DRAW) >= noise * 2.0**64:
        return label
    others = [c for c in classes if c != label]
    return others[sample_hash(seed, epoch, index, _NOISE_CLASS) % len(others)]


def template_index(seed: int, epoch: int, index: int, n: int) -> int:
    """Which of `n` templates item `index` uses in `epoch`. A hash rather than an RNG stream, so
    the choice for one item does not depend on how many items there are or the order of access."""
    return _splitmix64(_splitmix64(_splitmix64(seed & _MASK) ^ (epoch & _MASK)) ^ (index & _MASK)) % n


def check_templates(templates: Sequence[str], what: str = "templates") -> list[str]:
    """Every template must hold exactly one '{}' placeholder (the class name)."""
    templates = list(templates)
    if not templates:
        raise ValueError(f"{what}: need at least one template")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ValueError(f"{what}: template {t!r} must contain exactly one '{{}}'")
    return templates


def fill(template: str, name: str) -> str:
    return template.replace("{}", name)
