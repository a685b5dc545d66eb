"""What a checkpoint records beyond the weights: counters, data position, RNG states, and the
optimizer, scheduler and scaler state dicts. Stored as `trainer.pt`, read with weights_only=True."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

FORMAT = 1


@dataclass
class Progress:
    step: int = 0  # optimizer steps taken (skipped non-finite steps included)
    samples: int = 0  # training pairs seen, over all processes
    bad_steps: int = 0  # non-finite losses skipped so far
    bad_streak: int = 0  # ... of which in a row up to now
    seconds: float = 0.0  # training time before this process started (resumed runs)
    position: dict = field(default_factory=lambda: {"epoch": 0, "samples_in_epoch": 0})


@dataclass
class Layout:
    """How the batch was split; a resume under another layout is allowed for map-style data (the
    position is counted in global samples) but RNG streams per process then start afresh."""

    batch_size: int
    world_size: int
    accum_steps: int
    dataset_len: int | None


def trainer_state(progress: Progress, layout: Layout, *, optimizer: dict, optimizer_format: str,
                  scheduler: dict, scaler: dict | None, rng: list[dict]) -> dict:
    return {
        "format": FORMAT,
        "progress": asdict(progress),
        "layout": asdict(layout),
        "optimizer": optimizer,
        "optimizer_format": optimizer_format,
        "scheduler": scheduler,
        "scaler": scaler,
        "rng": rng,  # one entry per rank
    }


def progress_from(state: dict) -> Progress:
    return Progress(**state["progress"])


def layout_from(state: dict) -> Layout:
    return Layout(**state["layout"])
