"""One optimizer step, and the parts it changes.

`Learner` holds the model (and its DDP/FSDP wrapper), the objective, optimizer, schedule,
precision and progress counters: what a step changes, what a checkpoint saves and a resume puts
back (lipkit.train.checkpointing). `train_step` runs one step: forward and backward over the
micro-batches (lipkit.train.accumulation), a non-finite loss skipped with the objective's state
(nCLIP centers) put back, gradients outside the wrapper averaged over ranks, clipping over both
groups, the optimizer and the schedule, and the logit-scale clamp.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from lipkit import distributed
from lipkit.config import TrainConfig
from lipkit.errors import LipkitError
from lipkit.models import LIPModel
from lipkit.train.accumulation import MicroBatch, forward_backward
from lipkit.train.parallel import Parallel, clip_gradients
from lipkit.train.precision import Precision
from lipkit.train.trainer_state import Progress


class NonFiniteLossError(LipkitError, RuntimeError):
    """The loss stayed NaN or infinite for more than train.max_bad_steps steps; names the step and every term."""


@dataclass
class Learner:
    model: LIPModel  # the model itself (under FSDP2 its parameters are sharded)
    parallel: Parallel  # how it runs over processes: parallel.train_model is what a step calls
    objective: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: Precision
    device: torch.device
    channels_last: bool = False  # images and conv weights in channels-last memory format (CUDA)
    progress: Progress = field(default_factory=Progress)
    # Trainable parameters in two groups: those the wrapper synchronises, and those the loop
    # averages over ranks itself (the replicated heads, the objective's). Clipping takes the norm
    # over both (the first may hold sharded DTensors).
    wrapped: list[nn.Parameter] = field(init=False)
    loop_synced: list[nn.Parameter] = field(init=False)

    def __post_init__(self) -> None:
        replicated = {id(p) for p in self.parallel.replicated}
        self.wrapped = [p for p in self.model.parameters() if p.requires_grad and id(p) not in replicated]
        self.loop_synced = [p for p in self.parallel.replicated if p.requires_grad]
        self.loop_synced += [p for p in self.objective.parameters() if p.requires_grad]


@dataclass
class StepOutcome:
    terms: dict[str, torch.Tensor]  # the objective's loss and its terms
    finite: bool  # False: the step was skipped
    grad_norm: torch.Tensor | None  # before clipping (None without train.grad_clip_norm)


def train_step(learner: Learner, micro_batches: Sequence[MicroBatch], cfg: TrainConfig, announce: bool) -> StepOutcome:
    """One optimizer step over `micro_batches` (one global batch), computing the heads the
    objective reads; `announce`: this process prints the warning for a skipped step."""
    objective, optimizer, precision, progress = learner.objective, learner.optimizer, learner.precision, learner.progress
    # what a skipped step must leave as it was: the objective's state (nCLIP centers) and the
    # model's (the prototype heads' BatchNorm running statistics, updated in the forward)
    buffers = [(b, b.clone()) for module in (objective, learner.model) for b in module.buffers()]
    optimizer.zero_grad(set_to_none=True)
    terms, finite = forward_backward(learner.parallel.train_model, objective, micro_batches, objective.required_heads,
                                     precision, no_sync=learner.parallel.no_sync, lip_model=learner.model)
    grad_norm = None
    if finite:
        progress.bad_streak = 0
        distributed.average_gradients(learner.loop_synced)
        if progress.step < learner.model.cfg.prototypes.freeze_steps:
            for p in learner.model.prototype_vectors():  # no update, no weight decay (AdamW skips them)
                p.grad = None
        precision.unscale_(optimizer)
        if cfg.grad_clip_norm > 0:
            grad_norm = clip_gradients([learner.wrapped, learner.loop_synced], cfg.grad_clip_norm)
        precision.step(optimizer)
    else:  # skip: no update, and every buffer as before the step
        for buffer, value in buffers:
            buffer.copy_(value)
        optimizer.zero_grad(set_to_none=True)
        progress.bad_steps += 1
        progress.bad_streak += 1
        if progress.bad_streak > cfg.max_bad_steps:
            raise NonFiniteLossError(
                f"non-finite loss at step {progress.step + 1}, {progress.bad_streak} steps in a row "
                f"(more than train.max_bad_steps={cfg.max_bad_steps}): {term_summary(terms)}"
            )
        if announce:
            tqdm.write(f"lipkit: warning: non-finite loss at step {progress.step + 1} skipped ({term_summary(terms)})")
    with warnings.catch_warnings():  # a skipped update (non-finite, fp16 overflow) still moves the schedule
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
        learner.scheduler.step()
    learner.model.clamp_logit_scale()
    return StepOutcome(terms, finite, grad_norm)


def term_summary(terms: dict) -> str:
    return ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items() if k == "loss" or k.endswith("_loss"))
