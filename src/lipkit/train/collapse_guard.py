"""Watching nCLIP for collapse while it trains.

The objective logs, per modality, the batch mutual information between input and prototype as a
share of its largest possible value, I / log min(N, K) (`image_mi_ratio`, `text_mi_ratio`; under
xCLIP `nclip/...`). Both collapses drive it to 0: every input on one prototype, and every input
given the same soft distribution (which H(p̄)/log K alone cannot see). After the warm-up, when a
modality's ratio stays under `train.collapse_threshold` for `train.collapse_patience` logged steps
in a row, the guard says so once, naming the kind of collapse, the numbers and the settings to
change (printed, and recorded as `collapse` in metrics.jsonl); with `train.stop_on_collapse` the
run stops with a `CollapseError` instead.

Every rank sees the same (all-reduced) logged values, so every rank takes the same decision.
"""
from __future__ import annotations

import math
from collections import deque

from lipkit.config import ConfigError, TrainConfig
from lipkit.errors import LipkitError

MODALITIES = ("image", "text")
ONE_PROTOTYPE_USAGE = 0.1  # H(p_bar)/log K below this, with no information: the one-prototype collapse
SETTINGS = (
    "objective.nclip.lambda_sharp and lambda_smooth (1 and 1: information maximisation), "
    "objective.nclip.target_temperature equal to temperature, model.prototypes.batch_norm=true, "
    "a lower train.lr, or fewer model.prototypes.num_prototypes"
)


class CollapseError(LipkitError, RuntimeError):
    """nCLIP collapsed and train.stop_on_collapse asked to stop; names the numbers and the fix."""


def prototype_capacity_warning(num_prototypes: int, global_batch: int) -> str | None:
    """A warning when K exceeds the global batch: a batch of N can spread confident predictions
    over at most N prototypes, so ME-MAX then rewards spreading each prediction instead."""
    if num_prototypes <= global_batch:
        return None
    return (f"model.prototypes.num_prototypes={num_prototypes} exceeds the global batch of {global_batch}: "
            f"a batch can spread confident predictions over at most {global_batch} prototypes, so the "
            f"smoothness term pushes every prediction toward a flat distribution (a collapse to "
            f"input-independent outputs). Use num_prototypes <= {global_batch}, of the order of the concepts "
            f"the captions name, or a larger train.batch_size")


def _value(record: dict, key: str) -> float | None:
    for name, value in record.items():
        if name == key or name.endswith("/" + key):
            return float(value)
    return None


class CollapseGuard:
    def __init__(self, cfg: TrainConfig):
        if not 0 <= cfg.collapse_threshold < 1:
            raise ConfigError(f"train.collapse_threshold: must lie in [0, 1), got {cfg.collapse_threshold}")
        if cfg.collapse_patience < 1:
            raise ConfigError(f"train.collapse_patience: must be >= 1, got {cfg.collapse_patience}")
        self.threshold, self.after_step = cfg.collapse_threshold, cfg.warmup_steps
        self.recent = {m: deque(maxlen=cfg.collapse_patience) for m in MODALITIES}
        self.fired = False

    def check(self, step: int, record: dict) -> str | None:
        """The collapse this logged step's record completes (once per run), or None."""
        if self.fired:
            return None
        for modality in MODALITIES:
            ratio = _value(record, f"{modality}_mi_ratio")
            if ratio is None:
                return None  # an objective without prototypes: nothing to watch
            recent = self.recent[modality]
            if math.isnan(ratio):  # a skipped (non-finite) step: no evidence either way
                continue
            if step <= self.after_step or not ratio < self.threshold:
                recent.clear()
                continue
            recent.append(ratio)
            if len(recent) == recent.maxlen:
                self.fired = True
                return self._message(step, modality, list(recent), record)
        return None

    def _message(self, step: int, modality: str, ratios: list[float], record: dict) -> str:
        # With I ~ 0 every input has the same distribution p = p_bar: one-hot when H(p_bar) ~ 0
        # (the collapsing modality's own usage entropy; the pooled counts below can hide it)
        usage = _value(record, f"{modality}_usage_entropy_ratio")
        used, top = _value(record, "distinct_prototypes"), _value(record, "mean_max_prob")
        if usage is not None:
            one_hot = usage < ONE_PROTOTYPE_USAGE
        else:  # a record from before the per-modality usage: the pooled diagnostics
            one_hot = used is not None and top is not None and used <= 2 and top >= 0.9
        if one_hot:
            kind = "collapse onto one prototype (every input gets the same one-hot assignment)"
        else:
            kind = "collapse to an input-independent output (every input gets the same soft distribution)"
        numbers = ", ".join(f"{r:.3f}" for r in ratios)
        extra = "" if usage is None else f"; {modality} usage entropy H(p̄)/log K {usage:.2f}"
        extra += "" if used is None else f"; distinct prototypes {used:.0f}, mean max probability {top:.2f}"
        return (f"nCLIP {kind} at step {step}: the {modality} prototypes' batch mutual information "
                f"I/log min(N, K) stayed below train.collapse_threshold={self.threshold} for {len(ratios)} "
                f"logged steps ({numbers}{extra}). Settings to change: {SETTINGS}")
