"""When and what the loop checkpoints: every `train.save_every_steps`, every
`train.save_every_minutes`, on a stop signal and at the end. Every rank takes part (FSDP gathers
shards, RNG states are collected per rank); only rank 0 writes, into its RunPlace (which a run
replacing another takes over at its first checkpoint)."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch
from torch import nn

from lipkit import distributed
from lipkit.config import RunConfig, save_config
from lipkit.files import atomic_write
from lipkit.run_dir import (
    CONFIG_FILE,
    MODEL_FILE,
    OBJECTIVE_FILE,
    TOKENIZER_FILE,
    TRAINER_FILE,
    prune_checkpoints,
    write_checkpoint,
    write_tensors,
    write_torch,
)
from lipkit.tokenizer import Tokenizer
from lipkit.train.parallel import Parallel
from lipkit.train.precision import Precision
from lipkit.train.rng import capture_rng
from lipkit.train.run_place import RunPlace
from lipkit.train.trainer_state import Layout, Progress, trainer_state

_clock = time.monotonic  # replaced in tests


class Checkpointer:
    def __init__(self, place: RunPlace, cfg: RunConfig, tokenizer: Tokenizer, parallel: Parallel, objective: nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler, precision: Precision, device: torch.device,
                 layout: Layout):
        self.place, self.cfg, self.tokenizer, self.parallel = place, cfg, tokenizer, parallel
        self.objective, self.optimizer, self.scheduler, self.precision = objective, optimizer, scheduler, precision
        self.device, self.layout = device, layout
        self.last_save = _clock()
        self.last_step: int | None = None

    def step_due(self, step: int) -> bool:
        every = self.cfg.train.save_every_steps
        return every > 0 and step % every == 0

    def time_due(self) -> bool:
        minutes = self.cfg.train.save_every_minutes
        return minutes > 0 and _clock() - self.last_save >= 60 * minutes

    def save(self, progress: Progress) -> Path | None:
        """Write RUN/checkpoints/step-N and refresh RUN/model.safetensors; the path on rank 0."""
        model_state = self.parallel.model_state()
        optimizer_state = self.parallel.optimizer_state(self.optimizer, self.objective)
        rng = distributed.gather_to_main(capture_rng(self.device))
        self.last_save, self.last_step = _clock(), progress.step
        if distributed.rank() != 0:
            return None
        state = trainer_state(
            progress, self.layout, optimizer=optimizer_state, optimizer_format=self.parallel.optimizer_format,
            scheduler=self.scheduler.state_dict(), scaler=self.precision.state_dict(), rng=rng,
        )
        objective_state = self.objective.state_dict()
        run_dir = self.place.path
        path = write_checkpoint(run_dir, progress.step, {
            CONFIG_FILE: lambda p: save_config(self.cfg, p),
            TOKENIZER_FILE: self.tokenizer.save,
            MODEL_FILE: lambda p: write_tensors(model_state, p),
            OBJECTIVE_FILE: lambda p: write_tensors(objective_state, p),
            TRAINER_FILE: lambda p: write_torch(state, p),
        })
        # The run directory itself always holds the newest weights (what `lipkit eval RUN` reads).
        for name in (MODEL_FILE, OBJECTIVE_FILE):
            atomic_write(run_dir / name, lambda p, name=name: shutil.copyfile(path / name, p))
        prune_checkpoints(run_dir, self.cfg.train.keep_checkpoints)
        if self.place.commit():  # the first checkpoint of a run replacing another: it now stands in its place
            path = self.place.path / path.relative_to(run_dir)
        return path
