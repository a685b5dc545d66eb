"""The loop's checkpoints, both ways: `Checkpointer` writes them (every `train.save_every_steps`,
every `train.save_every_minutes`, on a stop signal and at the end), `restore` puts one back into a
freshly built run. The format of the files is lipkit.runs.directory's.

Every rank takes part in a save (FSDP gathers shards, RNG states are collected per rank); only
rank 0 writes, into its RunPlace (which a run replacing another takes over at its first
checkpoint). Every rank restores the same checkpoint, each its own random streams."""
from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

from lipkit import distributed
from lipkit.config import RunConfig, TrainConfig, save_config
from lipkit.files import atomic_write
from lipkit.runs.directory import (
    CONFIG_FILE,
    MODEL_FILE,
    OBJECTIVE_FILE,
    TOKENIZER_FILE,
    TRAINER_FILE,
    CheckpointError,
    load_objective_state,
    load_trainer_state,
    prune_checkpoints,
    weights_for,
    write_checkpoint,
    write_tensors,
    write_torch,
)
from lipkit.tokenizer import Tokenizer
from lipkit.train.rng import capture_rng, mix_seed, restore_rng, seed_all
from lipkit.train.run_place import RunPlace
from lipkit.train.step import Learner
from lipkit.train.trainer_state import Layout, Progress, layout_from, progress_from, trainer_state

_clock = time.monotonic  # replaced in tests


class Checkpointer:
    def __init__(self, place: RunPlace, cfg: RunConfig, tokenizer: Tokenizer, learner: Learner, layout: Layout,
                 evaluation=None):
        self.place, self.cfg, self.tokenizer, self.learner, self.layout = place, cfg, tokenizer, learner, layout
        self.evaluation = evaluation  # a TrainingEvaluation (lipkit.train.in_training_eval), whose schedule it saves
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
        learner = self.learner
        model_state = learner.parallel.model_state()
        optimizer_state = learner.parallel.optimizer_state(learner.optimizer, learner.objective)
        rng = distributed.gather_to_main(capture_rng(learner.device))
        self.last_save, self.last_step = _clock(), progress.step
        if distributed.rank() != 0:
            return None
        state = trainer_state(
            progress, self.layout, optimizer=optimizer_state, optimizer_format=learner.parallel.optimizer_format,
            scheduler=learner.scheduler.state_dict(), scaler=learner.precision.state_dict(), rng=rng,
        )
        if self.evaluation is not None:
            state["evaluation"] = self.evaluation.state_dict()
        objective_state = learner.objective.state_dict()
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


def restore(learner: Learner, checkpoint: Path, layout: Layout, cfg: TrainConfig) -> dict | None:
    """Put `checkpoint` back into `learner` (built fresh, as a new run): the model's weights and
    the objective's state, the optimizer, schedule and gradient scaler, the counters and the data
    position (`learner.progress`, where the batches start), and every random stream, so that the
    run continues exactly where the checkpoint was taken. Nothing draws from the random streams
    after this (the frozen-tower feature cache draws from its own).

    A checkpoint of another architecture, objective, strategy or training set is refused in one
    line; the run directory is written only after this. Returns the evaluation schedule's state
    (lipkit.train.in_training_eval), None when the checkpoint has none."""
    saved = load_trainer_state(checkpoint)
    learner.parallel.load_model_state(weights_for(learner.model, checkpoint / MODEL_FILE))
    load_objective_state(learner.objective, checkpoint / OBJECTIVE_FILE)
    if saved["optimizer_format"] != learner.parallel.optimizer_format:
        raise CheckpointError(
            f"{checkpoint}: optimizer state saved {saved['optimizer_format']} cannot be loaded under "
            f"train.strategy={cfg.strategy} with {layout.world_size} process(es)"
        )
    learner.parallel.load_optimizer_state(learner.optimizer, learner.objective, saved["optimizer"])
    learner.scheduler.load_state_dict(saved["scheduler"])
    learner.precision.load_state_dict(saved["scaler"])
    learner.progress = progress_from(saved)
    if layout_from(saved).dataset_len != layout.dataset_len:
        raise CheckpointError(
            f"{checkpoint}: the checkpoint was taken on {layout_from(saved).dataset_len} training pairs, "
            f"this run has {layout.dataset_len}; resume with the same data"
        )
    rank = distributed.rank()
    if len(saved["rng"]) == layout.world_size:  # the random streams continue where the checkpoint left them
        restore_rng(saved["rng"][rank], learner.device)
    else:
        warnings.warn(f"resuming with {layout.world_size} processes from a checkpoint taken with "
                      f"{len(saved['rng'])}: random streams restart from the seed", stacklevel=2)
        seed_all(mix_seed(cfg.seed, rank, learner.progress.step))
    return saved.get("evaluation")
