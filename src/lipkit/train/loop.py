"""The training loop, top to bottom: set-up, data, model, objective, steps, saving."""
from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from lipkit import distributed
from lipkit.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    atomic_write,
    save_model,
    save_run_config,
)
from lipkit.config import RunConfig
from lipkit.data import build_train_dataset
from lipkit.errors import LipkitError
from lipkit.models import LIPModel
from lipkit.objectives import build_objective
from lipkit.tokenizer import Tokenizer, build_tokenizer
from lipkit.train.metrics_log import MetricsLog
from lipkit.train.optim import build_optimizer, build_scheduler


class NonFiniteLossError(LipkitError, RuntimeError):
    """The loss became NaN or infinite; names the step and every term."""


@dataclass
class TrainResult:
    model: LIPModel
    run_dir: Path
    steps: int
    samples: int
    seconds: float
    final_loss: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _save(run_dir: Path, cfg: RunConfig, model: torch.nn.Module, tokenizer: Tokenizer) -> None:
    save_run_config(cfg, run_dir)
    atomic_write(run_dir / TOKENIZER_FILE, tokenizer.save)
    save_model(model, run_dir)


def _infinite_batches(loader: DataLoader, sampler):
    epoch = 0
    while True:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)
        yield from loader
        epoch += 1


class RunDirError(LipkitError, RuntimeError):
    """The run directory already holds a run that training would overwrite."""


def check_run_dir(run_dir: Path, overwrite: bool) -> None:
    existing = [p.name for p in (run_dir / CONFIG_FILE, run_dir / MODEL_FILE, run_dir / "metrics.jsonl") if p.exists()]
    if existing and not overwrite:
        raise RunDirError(
            f"{run_dir} already holds a run ({', '.join(existing)}); choose another --out or pass --overwrite"
        )
    if overwrite:
        for name in existing:
            (run_dir / name).unlink()


def train(cfg: RunConfig, run_dir: str | Path, overwrite: bool = False) -> TrainResult:
    run_dir = Path(run_dir)
    dist_info = distributed.init_from_env()
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed + dist_info.rank)
    device = torch.device("cuda", dist_info.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    cfg = copy.deepcopy(cfg)  # the run's own copy: resolved fields are written back below

    # ---- data and tokenizer
    dataset = build_train_dataset(cfg.data, seed=cfg.train.seed)
    tokenizer = build_tokenizer(cfg.model.text, dataset.possible_captions())
    cfg.model.text.vocab_size = tokenizer.vocab_size

    # ---- objective and model (the model builds only the heads the objective reads)
    objective = build_objective(cfg.objective).to(device)
    if not cfg.model.heads:
        cfg.model.heads = sorted(objective.required_heads)
    model = LIPModel(cfg.model).to(device)
    train_model = model
    if dist_info.world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist_info.local_rank] if device.type == "cuda" else None
        )

    # ---- optimisation
    optimizer = build_optimizer([model, objective], cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train)

    local_batch = cfg.train.batch_size // dist_info.world_size
    if local_batch * dist_info.world_size != cfg.train.batch_size:
        raise ValueError(
            f"train.batch_size {cfg.train.batch_size} is not divisible by the {dist_info.world_size} processes"
        )
    if len(dataset) < cfg.train.batch_size:
        raise ValueError(f"the dataset has {len(dataset)} pairs, fewer than train.batch_size {cfg.train.batch_size}")
    generator = torch.Generator().manual_seed(cfg.train.seed)
    if dist_info.world_size > 1:
        sampler = DistributedSampler(dataset, seed=cfg.train.seed, drop_last=True)
    else:
        sampler = RandomSampler(dataset, generator=generator)
    loader = DataLoader(
        dataset, batch_size=local_batch, sampler=sampler, drop_last=True,
        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
        persistent_workers=cfg.data.num_workers > 0,
    )

    # ---- run directory
    if dist_info.is_main:
        check_run_dir(run_dir, overwrite)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_run_config(cfg, run_dir)
        atomic_write(run_dir / TOKENIZER_FILE, tokenizer.save)
    log = MetricsLog(run_dir / "metrics.jsonl" if dist_info.is_main else None)

    # ---- steps
    model.train()
    objective.train()
    batches = _infinite_batches(loader, sampler)
    bar = tqdm(total=cfg.train.steps, desc=f"train {cfg.objective.name}", unit="step",
               disable=not (cfg.train.progress and dist_info.is_main), dynamic_ncols=True)
    start = time.perf_counter()
    window_start, window_samples, data_wait = start, 0, 0.0
    loss_value = math.nan
    for step in range(cfg.train.steps):
        t0 = time.perf_counter()
        batch = next(batches)
        tokens = tokenizer(list(batch["caption"]))
        images = batch["image"].to(device, non_blocking=True)
        tokens = tokens.to(device, non_blocking=True)
        data_wait += time.perf_counter() - t0

        outputs = train_model(images, tokens, heads=objective.required_heads)
        terms = objective(outputs)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite loss at step {step}: "
                + ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items() if k.endswith("_loss") or k == "loss")
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip_norm)
        optimizer.step()
        scheduler.step()
        model.clamp_logit_scale()

        window_samples += cfg.train.batch_size
        loss_value = loss.item()
        done = step + 1
        if done % cfg.train.log_every_steps == 0 or done == cfg.train.steps:
            now = time.perf_counter()
            sps = window_samples / max(now - window_start, 1e-9)
            record = {
                "step": done,
                "samples": done * cfg.train.batch_size,
                "lr": optimizer.param_groups[0]["lr"],
                "samples_per_s": sps,
                "data_wait_share": data_wait / max(now - window_start, 1e-9),
                **{k: distributed.all_reduce_mean(v.detach().float()) for k, v in terms.items()},
            }
            log.write(record)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{record['lr']:.2e}", sps=f"{sps:.0f}")
            window_start, window_samples, data_wait = now, 0, 0.0
        bar.update(1)
        if dist_info.is_main and cfg.train.save_every_steps and done % cfg.train.save_every_steps == 0:
            save_model(model, run_dir)
    bar.close()
    seconds = time.perf_counter() - start
    if dist_info.is_main:
        _save(run_dir, cfg, model, tokenizer)
    log.close()
    return TrainResult(model, run_dir, cfg.train.steps, cfg.train.steps * cfg.train.batch_size, seconds, loss_value)
