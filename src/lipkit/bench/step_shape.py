"""The training step lipkit's scaling model describes (lipkit.bench.flops, step_traffic, scaling):
what one optimizer step of a config runs on how many processes, and a one-line refusal of the
configs the model does not cover.

Covered: from-scratch ViT and text-transformer towers, both trained (no LiT locking, no LoRA), one
image view, the objectives clip, siglip, nclip and xclip, DDP or FSDP2, any accumulation."""
from __future__ import annotations

from dataclasses import dataclass

from lipkit.config import ConfigError, RunConfig
from lipkit.objectives import build_objective
from lipkit.train.batches import batch_layout

MODELLED_OBJECTIVES = ("clip", "siglip", "nclip", "xclip")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "fp64")  # tf32: fp32 with TF32 matmuls (a GPU setting)


@dataclass(frozen=True)
class StepShape:
    cfg: RunConfig
    world_size: int
    global_batch: int
    accum_steps: int
    built_heads: frozenset[str]  # what the model builds (model.heads, or what the objective reads)
    run_heads: frozenset[str]  # what a training step computes: the heads the objective reads
    precision: str  # one of PRECISIONS (auto: bf16, what lipkit picks on a GPU)
    strategy: str  # single | ddp | fsdp

    @property
    def micro_batch(self) -> int:
        """Pairs per process per micro-step."""
        return self.global_batch // (self.world_size * self.accum_steps)

    @property
    def float_dtype(self) -> str:
        """Parameters, gradients, features and batch statistics: float32, float64 under fp64 (bf16,
        fp16 and tf32 change only the matmuls; objectives and statistics run in at least fp32)."""
        return "float64" if self.precision == "fp64" else "float32"


def check_modelled(cfg: RunConfig) -> None:
    """A one-line ConfigError for a config the scaling model does not describe."""
    m = cfg.model
    refusals = [
        (m.vision.name != "vit", f"model.vision.name={m.vision.name}: only the ViT tower's FLOPs are modelled"),
        (m.text.name != "transformer",
         f"model.text.name={m.text.name}: only the text transformer's FLOPs are modelled"),
        (m.lock_image or m.lock_text, "model.lock_image / lock_text: only fully trained towers are modelled"),
        (getattr(m, "lora", None) is not None and m.lora.enabled, "model.lora.enabled: LoRA is not modelled"),
        ("ssl" in m.heads, "model.heads: the ssl head (SLIP) is not modelled"),
        (cfg.objective.name not in MODELLED_OBJECTIVES,
         f"objective.name={cfg.objective.name}: the scaling model covers {', '.join(MODELLED_OBJECTIVES)}"),
        (cfg.data.image_views > 1, f"data.image_views={cfg.data.image_views}: one view per image is modelled"),
    ]
    for refused, message in refusals:
        if refused:
            raise ConfigError(f"lipkit bench scaling: {message}")


def step_shape(cfg: RunConfig, world_size: int, global_batch: int = 0, precision: str = "") -> StepShape:
    """`global_batch` 0: train.batch_size; `precision` "": train.precision (auto: bf16)."""
    check_modelled(cfg)
    if world_size < 1:
        raise ConfigError(f"lipkit bench scaling: the number of processes must be >= 1, got {world_size}")
    precision = precision or cfg.train.precision
    precision = "bf16" if precision == "auto" else precision
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision (or train.precision): must be one of {', '.join(PRECISIONS)}, "
                          f"got {precision!r}")
    batch = global_batch or cfg.train.batch_size
    batch_layout(batch, world_size, cfg.train.accum_steps)
    run_heads = frozenset(build_objective(cfg.objective).required_heads)
    built = frozenset(cfg.model.heads) if cfg.model.heads else run_heads
    strategy = "single" if world_size == 1 else cfg.train.strategy
    return StepShape(cfg, world_size, batch, cfg.train.accum_steps, built, run_heads, precision, strategy)
