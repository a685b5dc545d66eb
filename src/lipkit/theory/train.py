"""One lab run: draw the data model, train the encoders with a lipkit objective (the same
`build_objective` and code as real training), measure zero-shot transfer on held-out images."""
from __future__ import annotations

import copy
import math

import torch

from lipkit.errors import LipkitError
from lipkit.objectives import build_objective
from lipkit.theory.config import TheoryConfig
from lipkit.theory.data import SyntheticDataModel
from lipkit.theory.encoders import SyntheticEncoders
from lipkit.theory.measures import positive_cosine, zero_shot_measures

# Offsets that keep the streams of one seed apart: data model, training batches, test set.
_TRAIN_STREAM, _TEST_STREAM = 1_000_003, 2_000_003


class TheoryRunError(LipkitError, RuntimeError):
    """A lab run that diverged; names the run and the step."""


def run_config(base: TheoryConfig, objective: str, **changes) -> TheoryConfig:
    """A copy of `base` with objective.name set and any of: temperature, lam (CLIP+Reg's lambda),
    batch_size, embed_dim, latent changed."""
    cfg = copy.deepcopy(base)
    cfg.objective.name = objective
    for key, value in changes.items():
        if key == "temperature":
            cfg.encoder.temperature = float(value)
        elif key == "lam":
            cfg.objective.clip_reg.lam = float(value)
        elif key == "batch_size":
            cfg.train.batch_size = int(value)
        elif key == "embed_dim":
            cfg.encoder.embed_dim = int(value)
        elif key == "latent":
            cfg.data.latent = value
        else:
            raise KeyError(f"run_config: unknown change {key!r}")
    return cfg


def _objective_scale(objective: torch.nn.Module, encoders: SyntheticEncoders) -> float:
    """The factor that turns cosines into the objective's logits: SigLIP's own t, else 1/tau.
    (The square loss has no scale: its logit-unit margin is reported at 1/tau, nominally.)"""
    scale = getattr(objective, "scale", None)
    return float(scale) if isinstance(scale, torch.Tensor) else float(encoders.log_logit_scale.exp())


def train_and_measure(cfg: TheoryConfig, seed: int) -> dict[str, float]:
    """Train one pair of encoders from `seed` (data model, initialisation, batches, test set) and
    return its zero-shot measures, positive cosine and final loss. Runs on cfg.threads threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _train_and_measure(cfg, seed)
    finally:
        torch.set_num_threads(threads)


def _train_and_measure(cfg: TheoryConfig, seed: int) -> dict[str, float]:
    data = SyntheticDataModel(cfg.data, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoders = SyntheticEncoders(data.image_dim, data.text_dim, cfg.encoder)
        objective = build_objective(cfg.objective)
    params = [p for m in (encoders, objective) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, foreach=True)
    batches = torch.Generator().manual_seed(seed + _TRAIN_STREAM)
    encoders.train()
    objective.train()
    loss = torch.tensor(math.nan)
    for step in range(cfg.train.steps):
        x, y, _ = data.sample(cfg.train.batch_size, batches)
        terms = objective(encoders(x, y))
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise TheoryRunError(
                f"{cfg.objective.name} (tau={cfg.encoder.temperature}, seed={seed}): non-finite loss at step {step}"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cfg.encoder.learn_temperature:
            with torch.no_grad():
                encoders.log_logit_scale.clamp_(max=math.log(cfg.encoder.max_logit_scale))

    encoders.eval()
    objective.eval()
    with torch.no_grad():
        x, y, labels = data.sample(cfg.data.test_size, torch.Generator().manual_seed(seed + _TEST_STREAM))
        image = encoders.encode_image(x)
        metrics = zero_shot_measures(
            image, encoders.encode_text(data.prompts()), labels, _objective_scale(objective, encoders)
        )
        metrics["positive_cosine"] = positive_cosine(image, encoders.encode_text(y))
        metrics["final_loss"] = float(loss)
    return metrics
