"""What image views cost: the step time of fashion-tiny training with 1, 2 and 3 views of each
image (data.image_views), as the strong recipe (2) and SLIP (3) train, and the share of it spent
waiting for data (the strong augmentation runs per item in PIL). Each setting runs the same steps
in this one process, one after another, and the table prints each one's ratio to 1 view.

    python benchmarks/image_views.py --steps 40 --batch-size 256

open_clip has no multi-view training to compare with; the peer comparison of the single-view step
is `lipkit bench` (docs/performance.md). Take the timing on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from lipkit.config import load_config
from lipkit.train import train

SETTINGS = (
    ("CLIP, 1 view", ["objective.name=clip", "data.image_views=1"]),
    ("CLIP, 2 views (strong recipe)", ["recipe=strong", "objective.name=clip"]),
    ("SLIP, 3 views", ["objective.name=slip", "data.image_views=3", "model.ssl.hidden_dim=512"]),
)


def step_seconds(run: Path, skip: int) -> tuple[float, float]:
    """Mean seconds per step and data-wait share over the logged steps after the first `skip`."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "samples_per_s" in r and r["step"] > skip]
    per_step = sum(r["samples_per_s"] ** -1 for r in rows) / len(rows)  # seconds per sample
    wait = sum(r["data_wait_share"] for r in rows) / len(rows)
    return per_step, wait


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"fashion-tiny, batch {args.batch_size}, {args.steps} steps each (the first 10 not timed), "
          f"{args.threads} threads\n")
    print("| setting | ms per step | data wait | ratio to 1 view |")
    print("|---|---:|---:|---:|")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for label, overrides in SETTINGS:
            cfg = load_config("fashion-tiny", [*overrides, f"train.steps={args.steps}", "train.log_every_steps=1",
                                               f"train.batch_size={args.batch_size}", "train.progress=false",
                                               f"train.threads={args.threads}", "data.train_limit=20000"])
            run = Path(tmp) / label.split(",")[0]
            train(cfg, run, overwrite=True)
            per_sample, wait = step_seconds(run, skip=10)
            ms = 1000 * per_sample * args.batch_size
            base = base or ms
            print(f"| {label} | {ms:.0f} | {wait:.0%} | {ms / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
