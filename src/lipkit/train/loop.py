"""The training loop, top to bottom in `train`: set-up, data and tokenizer, model and optimisation,
resume, run directory, batches, steps, the end. The pieces live in their own modules: step (one
optimizer step, and the `Learner` it changes), checkpointing (saving and `restore`), batches
(sampler and exact data position), accumulation (feature cache), parallel (DDP/FSDP2), precision,
rng, run_place, metrics_log, collapse_guard, signals, warm_start, in_training_eval (evaluation
during training, and the best kept)."""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from lipkit import distributed
from lipkit.config import ConfigError, RunConfig, TrainConfig
from lipkit.data import SkipTracker, TrackedBatches, build_train_dataset
from lipkit.data.builtins import train_normalization
from lipkit.data.feature_cache import cache_tower_features, cacheable
from lipkit.files import atomic_write
from lipkit.models import LIPModel
from lipkit.objectives import build_objective
from lipkit.runs.directory import TOKENIZER_FILE, resolve_resume, save_run_config, set_aside_later_checkpoints
from lipkit.tokenizer import Tokenizer, build_tokenizer
from lipkit.train.accumulation import MicroBatch, TowerFeatures
from lipkit.train.batches import BatchStream, batch_layout, check_batch_fits
from lipkit.train.checkpointing import Checkpointer, restore
from lipkit.train.collapse_guard import CollapseGuard
from lipkit.train.in_training_eval import TrainingEvaluation, check_eval_settings
from lipkit.train.metrics_log import MetricsLog, truncate_metrics
from lipkit.train.monitor import Monitor
from lipkit.train.optim import build_optimizer, build_scheduler
from lipkit.train.parallel import wrap_model
from lipkit.train.precision import Precision
from lipkit.train.rng import seed_all
from lipkit.train.run_place import DATA_REPORT_FILE, METRICS_FILE, TENSORBOARD_DIR, RunPlace
from lipkit.train.shared_dir import check_run_dir, same_checkpoint_everywhere
from lipkit.train.signals import StopSignals
from lipkit.train.step import Learner, train_step
from lipkit.train.trainer_state import Layout
from lipkit.train.warm_start import warm_start

logger = logging.getLogger("lipkit.train")


@dataclass
class TrainResult:
    model: LIPModel
    run_dir: Path
    steps: int  # the step the run ended at
    samples: int
    seconds: float  # training time of this process
    final_loss: float
    start_step: int = 0  # > 0 when resumed
    stopped_by: str | None = None  # the signal that ended the run early
    checkpoint: Path | None = None  # the newest checkpoint (rank 0)
    bad_steps: int = 0
    already_finished: bool = False  # resumed from a checkpoint at train.steps: no step taken, nothing written


def train(cfg: RunConfig, run_dir: str | Path, overwrite: bool = False, resume: str | Path | None = None,
          init: str | Path | None = None) -> TrainResult:
    """Train `cfg` into `run_dir`. `resume`: "latest" (the newest intact checkpoint in `run_dir`,
    from scratch when there is none yet), or a checkpoint or run directory to continue from; `init`:
    a run or imported model whose weights and tokenizer a new run starts from (warm_start).
    Everything is validated before the run directory is written (config, data, the checkpoint); it
    is locked for the run's life (one writer), and an --overwrite run replaces the old one only at
    its first checkpoint (see run_place)."""
    # ---- set-up: processes, the config, the output checked and locked, the run's own config copy
    run_dir, dist_info = Path(run_dir), distributed.init_from_env()
    check_train_config(cfg.train, dist_info.world_size)
    cfg.model.validate()
    check_run_dir(run_dir, dist_info)  # rank 0 can write it and every rank sees it (lipkit.train.shared_dir)
    with RunPlace(run_dir, writer=dist_info.is_main) as place, contextlib.ExitStack() as on_exit:
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        seed_all(cfg.train.seed, devices=True)  # the same initial weights on every rank (FSDP2 shards them as they are)
        device = torch.device("cuda", dist_info.local_rank) if torch.cuda.is_available() else torch.device("cpu")
        cfg = copy.deepcopy(cfg)  # resolved fields (heads, vocabulary, normalisation) are written back into it
        guard = CollapseGuard(cfg.train)
        checkpoint = _checkpoint_to_resume(resume, init, run_dir, dist_info.is_main)
        same_checkpoint_everywhere(checkpoint, dist_info.world_size)

        # ---- data and tokenizer (a resumed or warm-started run keeps its model's vocabulary)
        cfg.data.image_views = _image_views(cfg)
        dataset = build_train_dataset(cfg.data, seed=cfg.train.seed, vision=cfg.model.vision)
        cfg.data.normalization = train_normalization(cfg.data, cfg.model.vision)  # what evaluation repeats
        tokenizer = _tokenizer(cfg, dataset, checkpoint or init)

        # ---- model, objective and optimisation, built fresh
        learner = _learner(cfg, device, dist_info, init)
        check_batch_fits(dataset, cfg.train.batch_size)
        layout = Layout(cfg.train.batch_size, dist_info.world_size, cfg.train.accum_steps,
                        len(dataset) if hasattr(dataset, "__len__") else None)

        # ---- resume: every part of the checkpoint put back (lipkit.train.checkpointing)
        saved_evaluation = restore(learner, checkpoint, layout, cfg.train) if checkpoint is not None else None
        progress, start_step = learner.progress, learner.progress.step
        if checkpoint is not None and start_step >= cfg.train.steps:
            return _nothing_to_train(cfg, learner, run_dir, checkpoint)

        # ---- evaluation during training: checked against its data, and a new run's step 0 evaluated
        evaluation = TrainingEvaluation.build(cfg, tokenizer, learner, dist_info.is_main, fresh=checkpoint is None,
                                              saved=saved_evaluation)

        # ---- run directory (rank 0 writes): nothing was written before this point
        resuming_here = checkpoint is not None and checkpoint.parent.parent.resolve() == run_dir.resolve()
        write_dir = place.open(overwrite=overwrite, resuming=resuming_here)
        log = on_exit.enter_context(contextlib.closing(  # on_exit: closed however the run ends
            _write_run_files(cfg, tokenizer, place, dist_info.is_main, progress.step if resuming_here else None)))

        # ---- batches, from the restored data position
        stream = on_exit.enter_context(contextlib.closing(
            _batches(dataset, learner, tokenizer, cfg, dist_info, place, write_dir, layout)))
        checkpointer = Checkpointer(place, cfg, tokenizer, learner, layout, evaluation)

        # ---- steps
        learner.model.train()
        learner.objective.train()
        monitor = on_exit.enter_context(contextlib.closing(
            Monitor(cfg, log, guard, learner, start_step, dist_info.is_main)))
        if evaluation is not None:
            evaluation.attach(place, log, monitor, resuming_here)
        start, stopped_by, last_checkpoint = time.perf_counter(), None, None
        with StopSignals() as signals:
            while progress.step < cfg.train.steps:
                t0 = time.perf_counter()
                micro = [_to_device(next(stream), tokenizer, learner) for _ in range(cfg.train.accum_steps)]
                data_wait = time.perf_counter() - t0
                outcome = train_step(learner, micro, cfg.train, announce=dist_info.is_main)
                progress.step += 1
                progress.samples += cfg.train.batch_size
                progress.position = stream.position()
                eval_time = evaluation is not None and evaluation.time_due()
                stop, time_due, eval_time_due = distributed.all_reduce_max_flags(
                    signals.received is not None, checkpointer.time_due(), eval_time,
                    device=device if dist_info.world_size > 1 else "cpu")
                if evaluation is not None and not stop and evaluation.due(progress.step, eval_time_due):
                    evaluation.evaluate(progress)  # recorded before the step's own record
                monitor.step_done(outcome, learner, data_wait)
                if stop or time_due or checkpointer.step_due(progress.step):
                    last_checkpoint = checkpointer.save(progress)
                if stop:
                    stopped_by = signals.received or "a signal to another process"
                    break
        seconds = time.perf_counter() - start

        # ---- the end: a final checkpoint (unless one was just written) and the weights in the run directory
        if checkpointer.last_step != progress.step:
            last_checkpoint = checkpointer.save(progress)
    return TrainResult(learner.model, run_dir, progress.step, progress.samples, seconds, monitor.loss, start_step,
                       stopped_by, checkpoint=last_checkpoint, bad_steps=progress.bad_steps)


def check_train_config(t: TrainConfig, world_size: int = 1) -> None:
    for key, value, low in (("keep_checkpoints", t.keep_checkpoints, 1), ("max_bad_steps", t.max_bad_steps, 0),
                            ("accum_steps", t.accum_steps, 1), ("steps", t.steps, 0), ("batch_size", t.batch_size, 1),
                            ("warmup_steps", t.warmup_steps, 0), ("log_every_steps", t.log_every_steps, 1),
                            ("save_every_steps", t.save_every_steps, 0)):
        if value < low:
            raise ConfigError(f"train.{key}: must be >= {low}, got {value}")
    for key, value in (("save_every_minutes", t.save_every_minutes), ("grad_clip_norm", t.grad_clip_norm)):
        if not value >= 0:  # NaN too
            raise ConfigError(f"train.{key}: must be >= 0, got {value}")
    # an infinite or NaN rate (or decay) turns every weight into NaN at the first step
    for key, value, ok, rule in (("lr", t.lr, 0 < t.lr < math.inf, "> 0 and finite"),
                                 ("weight_decay", t.weight_decay, 0 <= t.weight_decay < math.inf, ">= 0 and finite"),
                                 ("eps", t.eps, 0 < t.eps < math.inf, "> 0 and finite"),
                                 ("beta1", t.beta1, 0 <= t.beta1 < 1, "in [0, 1)"),
                                 ("beta2", t.beta2, 0 <= t.beta2 < 1, "in [0, 1)"),
                                 ("min_lr_ratio", t.min_lr_ratio, 0 <= t.min_lr_ratio <= 1, "in [0, 1]")):
        if not ok:
            raise ConfigError(f"train.{key}: must be {rule}, got {value}")
    batch_layout(t.batch_size, world_size, t.accum_steps)
    check_eval_settings(t)
    if t.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("train.tensorboard: the 'tensorboard' package is not installed (pip install tensorboard)")


# --------------------------------------------------------------------------- the sections' details
def _nothing_to_train(cfg: RunConfig, learner: Learner, run_dir: Path, checkpoint: Path) -> TrainResult:
    """A resume from a checkpoint at train.steps: no step to take, nothing written. One past it
    (train.steps lowered) is refused: the run cannot end before where it already is."""
    step = learner.progress.step
    if step > cfg.train.steps:
        raise ConfigError(f"train.steps={cfg.train.steps}: the checkpoint to resume ({checkpoint}) is already at "
                          f"step {step}; pass train.steps >= {step}")
    return TrainResult(learner.model, run_dir, step, learner.progress.samples, 0.0, math.nan, start_step=step,
                       checkpoint=checkpoint, already_finished=True)


def _checkpoint_to_resume(resume: str | Path | None, init: str | Path | None, run_dir: Path,
                          is_main: bool) -> Path | None:
    """The checkpoint `--resume` names (None: a new run); refused together with `--init`."""
    checkpoint = resolve_resume(str(resume), run_dir) if resume is not None else None
    if checkpoint is not None and init is not None:
        raise ConfigError("--init starts a new run from a model; --resume continues a run: give one of them")
    if resume is not None and checkpoint is None and is_main:
        logger.warning("lipkit: note: %s holds no checkpoint yet; starting from step 0", run_dir)
    return checkpoint


def _image_views(cfg: RunConfig) -> int:
    """data.image_views, or the objective's own number when it is left at 0 (SLIP: 3)."""
    objective = build_objective(cfg.objective)
    views = cfg.data.image_views or objective.image_views
    if "ssl" in objective.required_heads and views < 2:
        raise ConfigError(f"data.image_views: objective {cfg.objective.name} compares two views of each image, "
                          f"so it needs 2 or more, got {views}")
    return views


def _tokenizer(cfg: RunConfig, dataset, model_dir: str | Path | None) -> Tokenizer:
    """Trained on the run's captions, or the one of the run or model in `model_dir`."""
    tokenizer = build_tokenizer(cfg.model.text, dataset.possible_captions())
    if model_dir is not None:
        tokenizer = Tokenizer.load(Path(model_dir) / TOKENIZER_FILE)
    cfg.model.text.vocab_size = tokenizer.vocab_size
    return tokenizer


def _learner(cfg: RunConfig, device: torch.device, dist_info: distributed.DistInfo,
             init: str | Path | None) -> Learner:
    """The objective, the model with only the heads it reads (from `init`'s weights, when given),
    wrapped for the processes, and its optimizer and schedule."""
    precision = Precision.build(cfg.train.precision, device)
    objective = build_objective(cfg.objective).to(device, precision.param_dtype)
    if not cfg.model.heads:
        cfg.model.heads = sorted(objective.required_heads)
    model = LIPModel(cfg.model).to(precision.param_dtype)
    if init is not None:
        for note in warm_start(model, Path(init)):
            if dist_info.is_main:
                tqdm.write(f"lipkit: note: {note}")
    seed_all(cfg.train.seed + dist_info.rank, devices=True)  # each rank its own dropout stream
    channels_last = cfg.train.channels_last and device.type == "cuda"
    model = model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
    parallel = wrap_model(model, cfg.train.strategy, device)
    if cfg.train.compile:
        parallel.model.compile()
    optimizer = build_optimizer([model, objective], cfg.train)
    return Learner(model, parallel, objective, optimizer, build_scheduler(optimizer, cfg.train), precision, device,
                   channels_last)


def _write_run_files(cfg: RunConfig, tokenizer: Tokenizer, place: RunPlace, is_main: bool,
                     cut_after: int | None) -> MetricsLog:
    """The run's config and tokenizer written, and its metrics log opened; a run resumed in place
    (`cut_after`: the step it resumes from) drops the records of the steps it will take again and
    sets their checkpoints aside."""
    write_dir = place.path
    metrics_path = write_dir / METRICS_FILE
    if is_main:
        save_run_config(cfg, write_dir)
        atomic_write(write_dir / TOKENIZER_FILE, tokenizer.save)
        if cut_after is not None:
            truncate_metrics(metrics_path, cut_after)
            set_aside_later_checkpoints(write_dir, cut_after)
    log = MetricsLog(metrics_path if is_main else None,
                     write_dir / TENSORBOARD_DIR if cfg.train.tensorboard and is_main else None)
    if is_main:  # the open file moves with a run that replaces another; its errors name where it is
        place.on_move(lambda run_dir: setattr(log, "path", run_dir / METRICS_FILE))
    return log


def _batches(dataset, learner: Learner, tokenizer: Tokenizer, cfg: RunConfig, dist_info: distributed.DistInfo,
             place: RunPlace, write_dir: Path, layout: Layout) -> TrackedBatches:
    """Micro-batches from the data position in `learner.progress`, with unusable samples logged
    once each, listed in data_report.json, and fatal above data.max_bad_fraction."""
    device = learner.device
    if cfg.data.cache_features and learner.model.towers_frozen and cacheable(dataset) is None:
        # both towers locked (LiT): their features are computed once, then steps run only the heads
        dataset = cache_tower_features(dataset, learner.model, tokenizer, device=device,
                                       num_workers=cfg.data.num_workers)
    stream = BatchStream(
        dataset, global_batch=cfg.train.batch_size, accum_steps=cfg.train.accum_steps,
        world_size=dist_info.world_size, rank=dist_info.rank, seed=cfg.train.seed,
        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda", position=learner.progress.position,
    )

    def exchange(fresh, good):  # what every process met, so that all judge the same counts and stop together
        return distributed.pool_over_ranks(fresh, good, device=device)

    tracker = SkipTracker(
        cfg.data.max_bad_fraction, layout.dataset_len and layout.dataset_len + len(getattr(dataset, "skipped", [])),
        write_dir / DATA_REPORT_FILE if dist_info.is_main else None, initial=getattr(dataset, "skipped", []),
        exchange=exchange if dist_info.world_size > 1 else None, announce=dist_info.is_main)
    place.on_move(lambda new_dir: setattr(tracker, "report", new_dir / DATA_REPORT_FILE))
    return TrackedBatches(stream, tracker)


def _to_device(batch: dict, tokenizer: Tokenizer, learner: Learner) -> MicroBatch:
    device, dtype = learner.device, learner.precision.param_dtype
    if "image_features" in batch:  # frozen towers, cached features (lipkit.data.feature_cache)
        return TowerFeatures(batch["image_features"].to(device, dtype, non_blocking=True),
                             batch["text_features"].to(device, dtype, non_blocking=True))
    images = batch["image"]
    if "views" in batch:  # [B, V, C, H, W]: the first view, then the extra ones (data.image_views)
        images = torch.cat([images.unsqueeze(1), batch["views"]], dim=1)
    images = images.to(device, dtype=dtype if images.is_floating_point() else None, non_blocking=True)
    if learner.channels_last and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    tokens = tokenizer(list(batch["caption"])).to(device, non_blocking=True)
    return images, tokens
