"""The training loop, top to bottom: set-up, data, resume, model, optimisation, run directory,
steps, saving. The pieces live in their own modules: batches (sampler and exact data position),
accumulation (feature cache), parallel (DDP/FSDP2), precision, checkpointing, signals."""
from __future__ import annotations

import copy
import logging
import math
import random
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lipkit import distributed
from lipkit.config import ConfigError, RunConfig, TrainConfig
from lipkit.data import SkipTracker, TrackedBatches, build_train_dataset
from lipkit.data.builtins import train_normalization
from lipkit.data.feature_cache import cache_tower_features, cacheable
from lipkit.errors import LipkitError
from lipkit.models import LIPModel
from lipkit.files import atomic_write
from lipkit.objectives import build_objective
from lipkit.run_dir import (
    MODEL_FILE,
    OBJECTIVE_FILE,
    TOKENIZER_FILE,
    CheckpointError,
    load_objective_state,
    load_state_into,
    load_trainer_state,
    resolve_resume,
    save_run_config,
)
from lipkit.tokenizer import Tokenizer, build_tokenizer
from lipkit.train.accumulation import TowerFeatures, forward_backward
from lipkit.train.batches import BatchStream, batch_layout, check_batch_fits
from lipkit.train.checkpointing import Checkpointer
from lipkit.train.collapse_guard import CollapseError, CollapseGuard, prototype_capacity_warning
from lipkit.train.metrics_log import MetricsLog, Throughput, truncate_metrics
from lipkit.train.optim import build_optimizer, build_scheduler
from lipkit.train.parallel import clip_gradients, wrap_model
from lipkit.train.precision import Precision
from lipkit.train.rng import mix_seed, restore_rng, seed_all
from lipkit.train.run_place import DATA_REPORT_FILE, METRICS_FILE, TENSORBOARD_DIR, RunDirError, RunPlace  # noqa: F401
from lipkit.train.signals import StopSignals
from lipkit.train.trainer_state import Layout, Progress, layout_from, progress_from
from lipkit.train.warm_start import warm_start
from lipkit.writable import check_writable

logger = logging.getLogger("lipkit.train")


class NonFiniteLossError(LipkitError, RuntimeError):
    """The loss stayed NaN or infinite for more than train.max_bad_steps steps; names the step and every term."""


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_train_config(t: TrainConfig, world_size: int = 1) -> None:
    for key, value, low in (("keep_checkpoints", t.keep_checkpoints, 1), ("max_bad_steps", t.max_bad_steps, 0),
                            ("accum_steps", t.accum_steps, 1), ("steps", t.steps, 0), ("batch_size", t.batch_size, 1),
                            ("warmup_steps", t.warmup_steps, 0), ("log_every_steps", t.log_every_steps, 1),
                            ("save_every_steps", t.save_every_steps, 0)):
        if value < low:
            raise ConfigError(f"train.{key}: must be >= {low}, got {value}")
    for key, value in (("save_every_minutes", t.save_every_minutes), ("lr", t.lr), ("weight_decay", t.weight_decay),
                       ("grad_clip_norm", t.grad_clip_norm)):
        if not value >= 0:  # NaN too
            raise ConfigError(f"train.{key}: must be >= 0, got {value}")
    batch_layout(t.batch_size, world_size, t.accum_steps)


def _to_device(batch: dict, tokenizer: Tokenizer, device: torch.device, dtype: torch.dtype, channels_last: bool):
    if "image_features" in batch:  # frozen towers, cached features (lipkit.data.feature_cache)
        return TowerFeatures(batch["image_features"].to(device, dtype, non_blocking=True),
                             batch["text_features"].to(device, dtype, non_blocking=True))
    images = batch["image"].to(device, dtype=dtype if batch["image"].is_floating_point() else None, non_blocking=True)
    if channels_last and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    tokens = tokenizer(list(batch["caption"])).to(device, non_blocking=True)
    return images, tokens


def _term_summary(terms: dict) -> str:
    return ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items() if k == "loss" or k.endswith("_loss"))


def train(cfg: RunConfig, run_dir: str | Path, overwrite: bool = False, resume: str | Path | None = None,
          init: str | Path | None = None) -> TrainResult:
    """Train `cfg` into `run_dir`. `resume`: "latest" (the newest intact checkpoint in `run_dir`;
    from scratch when it has none yet), or a checkpoint or run directory to continue from. `init`:
    a run or imported-model directory whose weights and tokenizer a new run starts from
    (lipkit.train.warm_start).

    Everything is validated before the run directory is written: config, data, the checkpoint to
    resume. The directory is locked for the run's life (one writer); an --overwrite run replaces
    the old one only once it has written its first checkpoint (see run_place)."""
    run_dir = Path(run_dir)
    dist_info = distributed.init_from_env()
    check_train_config(cfg.train, dist_info.world_size)
    if dist_info.is_main:
        check_writable(run_dir, "--out")
    with RunPlace(run_dir, writer=dist_info.is_main) as place:
        return _train(cfg, place, dist_info, overwrite, resume, init)


def _train(cfg: RunConfig, place: RunPlace, dist_info: distributed.DistInfo, overwrite: bool,
           resume: str | Path | None, init: str | Path | None) -> TrainResult:
    run_dir = place.final
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)  # the same initial weights on every rank (FSDP2 shards them as they are)
    device = torch.device("cuda", dist_info.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    cfg = copy.deepcopy(cfg)  # the run's own copy: resolved fields are written back below
    guard = CollapseGuard(cfg.train)
    resume_dir = resolve_resume(str(resume), run_dir) if resume is not None else None
    if resume_dir is not None and init is not None:
        raise ConfigError("--init starts a new run from a model; --resume continues a run: give one of them")
    if resume is not None and resume_dir is None and dist_info.is_main:
        logger.warning("lipkit: note: %s holds no checkpoint yet; starting from step 0", run_dir)

    # ---- data and tokenizer
    dataset = build_train_dataset(cfg.data, seed=cfg.train.seed, vision=cfg.model.vision)
    cfg.data.normalization = train_normalization(cfg.data, cfg.model.vision)  # what evaluation repeats
    tokenizer = build_tokenizer(cfg.model.text, dataset.possible_captions())
    cfg.model.text.vocab_size = tokenizer.vocab_size

    # ---- resume: the checkpoint's tokenizer and trainer state (read before anything is written)
    saved = None
    if resume_dir is not None:
        saved = load_trainer_state(resume_dir)
    if resume_dir is not None or init is not None:
        tokenizer = Tokenizer.load(Path(resume_dir or init) / TOKENIZER_FILE)
        cfg.model.text.vocab_size = tokenizer.vocab_size

    # ---- objective and model (the model builds only the heads the objective reads)
    precision = Precision.build(cfg.train.precision, device)
    objective = build_objective(cfg.objective).to(device, precision.param_dtype)
    if not cfg.model.heads:
        cfg.model.heads = sorted(objective.required_heads)
    model = LIPModel(cfg.model).to(precision.param_dtype)
    if resume_dir is not None:  # a checkpoint of another architecture stops here, naming the keys
        load_state_into(model, resume_dir / MODEL_FILE)
        load_objective_state(objective, resume_dir / OBJECTIVE_FILE)
    if init is not None:
        for note in warm_start(model, Path(init)):
            if dist_info.is_main:
                tqdm.write(f"lipkit: note: {note}")
    seed_everything(cfg.train.seed + dist_info.rank)  # each rank its own dropout stream
    channels_last = cfg.train.channels_last and device.type == "cuda"
    model = model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
    parallel = wrap_model(model, cfg.train.strategy, device)
    if cfg.train.compile:
        parallel.model.compile()

    # ---- optimisation
    optimizer = build_optimizer([model, objective], cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train)
    progress = Progress()
    if saved is not None:
        if saved["optimizer_format"] != parallel.optimizer_format:
            raise CheckpointError(
                f"{resume_dir}: optimizer state saved {saved['optimizer_format']} cannot be loaded under "
                f"train.strategy={cfg.train.strategy} with {dist_info.world_size} process(es)"
            )
        parallel.load_optimizer_state(optimizer, objective, saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        precision.load_state_dict(saved["scaler"])
        progress = progress_from(saved)

    check_batch_fits(dataset, cfg.train.batch_size)
    layout = Layout(cfg.train.batch_size, dist_info.world_size, cfg.train.accum_steps,
                    len(dataset) if hasattr(dataset, "__len__") else None)
    if saved is not None and layout_from(saved).dataset_len != layout.dataset_len:
        raise CheckpointError(
            f"{resume_dir}: the checkpoint was taken on {layout_from(saved).dataset_len} training pairs, "
            f"this run has {layout.dataset_len}; resume with the same data"
        )

    # ---- run directory (rank 0 writes): nothing was written before this point
    resuming_here = resume_dir is not None and resume_dir.parent.parent.resolve() == run_dir.resolve()
    write_dir = place.open(overwrite=overwrite, resuming=resuming_here)
    metrics_path = write_dir / METRICS_FILE
    if dist_info.is_main:
        save_run_config(cfg, write_dir)
        atomic_write(write_dir / TOKENIZER_FILE, tokenizer.save)
        if resuming_here:
            truncate_metrics(metrics_path, progress.step)
    log = MetricsLog(metrics_path if dist_info.is_main else None,
                     write_dir / TENSORBOARD_DIR if cfg.train.tensorboard and dist_info.is_main else None)

    # ---- batches
    if cfg.data.cache_features and model.towers_frozen and cacheable(dataset) is None:
        # both towers locked (LiT): their features are computed once, then steps run only the heads
        dataset = cache_tower_features(dataset, model, tokenizer, device=device, num_workers=cfg.data.num_workers)
    stream = BatchStream(
        dataset, global_batch=cfg.train.batch_size, accum_steps=cfg.train.accum_steps,
        world_size=dist_info.world_size, rank=dist_info.rank, seed=cfg.train.seed,
        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda", position=progress.position,
    )
    # unusable samples: logged once each, listed in data_report.json, fatal above data.max_bad_fraction
    tracker = SkipTracker(
        cfg.data.max_bad_fraction, layout.dataset_len and layout.dataset_len + len(getattr(dataset, "skipped", [])),
        write_dir / DATA_REPORT_FILE if dist_info.is_main else None, initial=getattr(dataset, "skipped", []))
    place.on_move(lambda new_dir: setattr(tracker, "report", new_dir / DATA_REPORT_FILE))
    stream = TrackedBatches(stream, tracker)
    checkpointer = Checkpointer(place, cfg, tokenizer, parallel, objective, optimizer, scheduler, precision,
                                device, layout)

    # ---- steps
    if saved is not None:  # the random streams continue where the checkpoint left them
        if len(saved["rng"]) == dist_info.world_size:
            restore_rng(saved["rng"][dist_info.rank], device)
        else:
            warnings.warn(f"resuming with {dist_info.world_size} processes from a checkpoint taken with "
                          f"{len(saved['rng'])}: random streams restart from the seed", stacklevel=2)
            seed_all(mix_seed(cfg.train.seed, dist_info.rank, progress.step))
    model.train()
    objective.train()
    heads = objective.required_heads
    capacity = prototype_capacity_warning(cfg.model.prototypes.num_prototypes, cfg.train.batch_size)
    if capacity and "prototypes" in heads and dist_info.is_main:
        tqdm.write(f"lipkit: warning: {capacity}")
    # Gradients outside the wrapper's own synchronisation, averaged over ranks by the loop; clipping
    # takes the norm over both groups (the first may hold sharded DTensors).
    replicated = {id(p) for p in parallel.replicated}
    wrapped_params = [p for p in model.parameters() if p.requires_grad and id(p) not in replicated]
    loop_synced = [p for p in parallel.replicated if p.requires_grad]
    loop_synced += [p for p in objective.parameters() if p.requires_grad]
    start_step, steps, k = progress.step, cfg.train.steps, cfg.train.accum_steps
    bar = tqdm(total=steps, initial=start_step, desc=f"train {cfg.objective.name}", unit="step",
               disable=not (cfg.train.progress and dist_info.is_main), dynamic_ncols=True)
    throughput = Throughput(cfg.train.data_wait_warn_share, cfg.data.num_workers)
    start = time.perf_counter()
    loss_value, stopped_by, last_checkpoint = math.nan, None, None
    with StopSignals() as signals:
        while progress.step < steps:
            t0 = time.perf_counter()
            micro = [_to_device(next(stream), tokenizer, device, precision.param_dtype, channels_last) for _ in range(k)]
            data_wait = time.perf_counter() - t0

            buffers = {name: b.clone() for name, b in objective.named_buffers()}
            optimizer.zero_grad(set_to_none=True)
            terms, finite = forward_backward(parallel.train_model, objective, micro, heads, precision,
                                             no_sync=parallel.no_sync, lip_model=model)
            grad_norm = None
            if finite:
                progress.bad_streak = 0
                distributed.average_gradients(loop_synced)
                precision.unscale_(optimizer)
                if cfg.train.grad_clip_norm > 0:
                    grad_norm = clip_gradients([wrapped_params, loop_synced], cfg.train.grad_clip_norm)
                precision.step(optimizer)
            else:  # skip: no update, and objective state (nCLIP centers) as before the step
                for name, value in buffers.items():
                    objective.get_buffer(name).copy_(value)
                optimizer.zero_grad(set_to_none=True)
                progress.bad_steps += 1
                progress.bad_streak += 1
                if progress.bad_streak > cfg.train.max_bad_steps:
                    raise NonFiniteLossError(
                        f"non-finite loss at step {progress.step + 1}, {progress.bad_streak} steps in a row "
                        f"(more than train.max_bad_steps={cfg.train.max_bad_steps}): {_term_summary(terms)}"
                    )
                if dist_info.is_main:
                    tqdm.write(f"lipkit: warning: non-finite loss at step {progress.step + 1} skipped "
                               f"({_term_summary(terms)})")
            with warnings.catch_warnings():  # a skipped update (non-finite, fp16 overflow) still moves the schedule
                warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
                scheduler.step()
            model.clamp_logit_scale()
            progress.step += 1
            progress.samples += cfg.train.batch_size
            progress.position = stream.position()
            throughput.add(cfg.train.batch_size, data_wait)
            if finite:
                loss_value = terms["loss"].item()

            done = progress.step
            if done % cfg.train.log_every_steps == 0 or done == steps:
                figures, warning = throughput.window()
                record = {
                    "step": done, "samples": progress.samples, "epoch": progress.position["epoch"],
                    "lr": optimizer.param_groups[0]["lr"], **figures, "bad_steps": progress.bad_steps,
                    **({"grad_norm": grad_norm} if grad_norm is not None else {}),
                    **{name: distributed.all_reduce_mean(v.detach().float()) for name, v in terms.items()},
                }
                collapse = guard.check(done, record)
                if collapse:
                    record["collapse"] = collapse
                log.write(record)
                if collapse and cfg.train.stop_on_collapse:
                    raise CollapseError(f"{collapse} (train.stop_on_collapse=true)")
                if collapse and dist_info.is_main:
                    tqdm.write(f"lipkit: warning: {collapse}")
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{record['lr']:.2e}", sps=f"{figures['samples_per_s']:.0f}")
                if warning and dist_info.is_main:
                    tqdm.write(f"lipkit: warning: {warning}")
            bar.update(1)

            stop, time_due = distributed.all_reduce_max_flags(signals.received is not None, checkpointer.time_due(),
                                                              device=device if dist_info.world_size > 1 else "cpu")
            if stop or time_due or checkpointer.step_due(done):
                last_checkpoint = checkpointer.save(progress)
            if stop:
                stopped_by = signals.received or "a signal to another process"
                break
    bar.close()
    seconds = time.perf_counter() - start

    # ---- the end: a final checkpoint (unless one was just written) and the weights in the run directory
    if checkpointer.last_step != progress.step:
        last_checkpoint = checkpointer.save(progress)
    stream.close()
    log.close()
    return TrainResult(model, run_dir, progress.step, progress.samples, seconds, loss_value, start_step=start_step,
                       stopped_by=stopped_by, checkpoint=last_checkpoint, bad_steps=progress.bad_steps)
