"""Typed configuration of the theory lab: the synthetic data model, the encoders, training, and
the grid of every study. Parsed by lipkit.config's strict machinery (unknown key or wrong type is
one ConfigError line); `--set data.noise_std=0.5` overrides any field."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from lipkit.config import ClipRegObjectiveConfig, ConfigError, ObjectiveConfig
from lipkit.config_layers import apply_overrides
from lipkit.objectives import HEAD_CLIP, available_objectives, build_objective
from lipkit.typed_config import from_mapping
from lipkit.yaml_loader import read_yaml


@dataclass
class SyntheticDataConfig:
    """x = [A z + B e + noise ; u],  y = [C z + D e + noise ; w]  (OBJECTIVES.md §6, lipkit.theory.data)."""

    latent: Literal["onehot", "attributes"] = "onehot"
    num_classes: int = 12
    num_attributes: int = 10  # attributes: length of the binary shared latent
    attributes_per_class: int = 3  # attributes: the active attributes that define a class
    image_shared_dim: int = 16  # rows of A (and B)
    text_shared_dim: int = 16  # rows of C (and D)
    instance_dim: int = 0  # e: shared features that vary per pair, unrelated to the class
    instance_std: float = 0.5  # norm scale of B e and D e
    image_unique_dim: int = 16  # u: features only the image has
    text_unique_dim: int = 16  # w: features only the text has
    unique_std: float = 1.0  # norm scale of u and w
    noise_std: float = 0.6  # norm scale of each modality's own noise in the shared block
    test_size: int = 2000  # held-out images for the zero-shot measures


@dataclass
class SyntheticEncoderConfig:
    kind: Literal["linear", "mlp"] = "linear"  # mlp: one hidden layer, ReLU
    embed_dim: int = 8  # d; the embeddings are L2-normalised
    hidden_dim: int = 64
    temperature: float = 0.1  # tau: the encoders' logit scale is 1 / tau
    learn_temperature: bool = False
    max_logit_scale: float = 100.0  # clamp after every step when the temperature is learned


@dataclass
class SyntheticTrainConfig:
    steps: int = 500
    batch_size: int = 64
    lr: float = 0.02  # Adam; a fresh batch from the data model every step
    weight_decay: float = 0.0


@dataclass
class StudyGridConfig:
    seeds: int = 3  # every point is the mean +- std over seeds 0..seeds-1 (a seed fixes data model and init)
    # margin-vs-temperature and regularizer-sweep
    temperatures: list[float] = field(default_factory=lambda: [0.01, 0.02, 0.03, 0.05, 0.1, 0.3, 1.0])
    margin_objectives: list[str] = field(default_factory=lambda: ["clip", "clip_reg"])
    reg_lambdas: list[float] = field(default_factory=lambda: [0.0, 0.01, 0.03, 0.1, 0.3])
    # square-vs-clip (and top-r, which reuses its runs at top_r_embed_dim and the base latent)
    compare_objectives: list[str] = field(default_factory=lambda: ["clip", "square", "siglip", "cyclip", "clip_reg"])
    compare_embed_dims: list[int] = field(default_factory=lambda: [2, 4, 8, 16])
    compare_latents: list[Literal["onehot", "attributes"]] = field(default_factory=lambda: ["onehot", "attributes"])
    top_r_objectives: list[str] = field(default_factory=lambda: ["clip", "clip_reg", "square"])
    top_r_embed_dim: int = 4
    # batch-size
    batch_sizes: list[int] = field(default_factory=lambda: [4, 8, 16, 32, 64, 128, 256])
    batch_temperatures: list[float] = field(default_factory=lambda: [0.03, 0.1])
    batch_objectives: list[str] = field(default_factory=lambda: ["clip", "clip_reg"])


def _lab_objective() -> ObjectiveConfig:
    # CLIP+Reg at lambda 0.01 (times s): the regularizer-sweep's best at small tau in the default
    # data model (docs/theory.md). The library default (0.1) is one of the sweep's rows.
    return ObjectiveConfig(clip_reg=ClipRegObjectiveConfig(lam=0.01))


@dataclass
class TheoryConfig:
    data: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    encoder: SyntheticEncoderConfig = field(default_factory=SyntheticEncoderConfig)
    train: SyntheticTrainConfig = field(default_factory=SyntheticTrainConfig)
    # The objective settings every run starts from; a study sets `name` (and clip_reg.lambda).
    objective: ObjectiveConfig = field(default_factory=_lab_objective)
    studies: StudyGridConfig = field(default_factory=StudyGridConfig)
    threads: int = 1  # torch intra-op threads per run: the tensors are tiny, more threads only add overhead


def load_theory_config(path: str | None = None, overrides: list[str] = ()) -> TheoryConfig:
    data: dict = {}
    if path:
        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"theory config '{path}': expected a mapping at the top level")
    cfg = from_mapping(TheoryConfig, apply_overrides(data, list(overrides)))
    check_theory_config(cfg)
    return cfg


def check_theory_config(cfg: TheoryConfig) -> None:
    d = cfg.data
    positive = {
        "data.num_classes": d.num_classes, "data.image_shared_dim": d.image_shared_dim,
        "data.text_shared_dim": d.text_shared_dim, "data.test_size": d.test_size,
        "encoder.embed_dim": cfg.encoder.embed_dim, "encoder.hidden_dim": cfg.encoder.hidden_dim,
        "encoder.temperature": cfg.encoder.temperature, "train.steps": cfg.train.steps,
        "train.batch_size": cfg.train.batch_size, "train.lr": cfg.train.lr, "studies.seeds": cfg.studies.seeds,
        "threads": cfg.threads,
    }
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key}: must be > 0, got {value}")
    if d.num_classes < 2:
        raise ConfigError(f"data.num_classes: zero-shot needs at least 2 classes, got {d.num_classes}")
    if "attributes" in (d.latent, *cfg.studies.compare_latents):
        if not 0 < d.attributes_per_class <= d.num_attributes:
            raise ConfigError(
                f"data.attributes_per_class: must be in 1..num_attributes ({d.num_attributes}), got {d.attributes_per_class}"
            )
        if math.comb(d.num_attributes, d.attributes_per_class) < d.num_classes:
            raise ConfigError(
                f"data.num_classes: {d.num_classes} classes need distinct attribute sets, but only "
                f"C({d.num_attributes},{d.attributes_per_class}) = "
                f"{math.comb(d.num_attributes, d.attributes_per_class)} exist"
            )
    for key in ("instance_dim", "image_unique_dim", "text_unique_dim"):
        if getattr(d, key) < 0:
            raise ConfigError(f"data.{key}: must be >= 0, got {getattr(d, key)}")
    for key in ("instance_std", "unique_std", "noise_std"):
        if getattr(d, key) < 0:
            raise ConfigError(f"data.{key}: must be >= 0, got {getattr(d, key)}")
    grids = cfg.studies
    if not grids.compare_latents:
        raise ConfigError("studies.compare_latents: must name at least one latent (onehot, attributes)")
    for key in ("temperatures", "batch_temperatures", "compare_embed_dims", "batch_sizes"):
        bad = [v for v in getattr(grids, key) if not v > 0]
        if bad or not getattr(grids, key):
            raise ConfigError(f"studies.{key}: must be a non-empty list of values > 0, got {getattr(grids, key)}")
    if any(v < 0 for v in grids.reg_lambdas) or not grids.reg_lambdas:
        raise ConfigError(f"studies.reg_lambdas: must be a non-empty list of values >= 0, got {grids.reg_lambdas}")
    known = available_objectives()
    for key in ("margin_objectives", "compare_objectives", "top_r_objectives", "batch_objectives"):
        names = getattr(grids, key)
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise ConfigError(f"studies.{key}: unknown objective(s) {unknown}; available: {', '.join(known)}")
        # The lab's encoders have only the CLIP head (image_embeds, text_embeds, logit_scale).
        other = [n for n in names if not build_objective(ObjectiveConfig(name=n)).required_heads <= {HEAD_CLIP}]
        if other:
            raise ConfigError(f"studies.{key}: {other} need heads the lab's encoders do not have (only '{HEAD_CLIP}')")
