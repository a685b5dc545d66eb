"""lipkit merge RUN OUT: a LoRA run's adapters folded into its base weights, written as a complete
run directory without LoRA (config, weights, tokenizer, objective state) that lipkit eval,
lipkit.load, lipkit export and lipkit train --init read as any other run."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from lipkit.errors import LipkitError


class MergeError(LipkitError, ValueError):
    """A run that cannot be merged, stated in one line."""


MERGE_FILE = "merge.json"


def largest_difference(model, merged, tokenizer, cfg) -> float:
    """max |embedding difference| of the adapter model and the merged one, on 4 random images and
    captions (a check that folding changed no output beyond rounding)."""
    import torch

    v = cfg.model.vision
    images = torch.randn(4, v.channels, v.image_size, v.image_size, generator=torch.Generator().manual_seed(0))
    tokens = tokenizer(["a photo", "an image of a bag", "a small shoe", "this is a shirt"])
    with torch.no_grad():
        return max(float((model.encode_image(images) - merged.encode_image(images)).abs().max()),
                   float((model.encode_text(tokens) - merged.encode_text(tokens)).abs().max()))


def merge_run(spec: str | Path, out: str | Path) -> float:
    """Write the merged run of `spec` into `out` (nothing of `out` is kept on failure); returns
    the largest embedding difference of the check."""
    from lipkit.config import save_config, to_dict
    from lipkit.files import staged_directory, write_json
    from lipkit.models.lora import merged_model, without_lora
    from lipkit.runs.directory import CONFIG_FILE, OBJECTIVE_FILE, TOKENIZER_FILE, save_model
    from lipkit.runs.loading import load_run

    spec = Path(spec)
    model, tokenizer, cfg = load_run(spec)
    if not cfg.model.lora.enabled:
        raise MergeError(f"{spec}: the run has no LoRA adapters (model.lora.enabled is false): nothing to merge")
    merged = merged_model(model).eval()
    difference = largest_difference(model, merged, tokenizer, cfg)
    lora = to_dict(cfg.model.lora)
    cfg.model = without_lora(cfg.model)
    with staged_directory(Path(out), refuse=MergeError) as tmp:
        save_config(cfg, tmp / CONFIG_FILE)
        save_model(merged, tmp)
        tokenizer.save(tmp / TOKENIZER_FILE)
        if (spec / OBJECTIVE_FILE).is_file():
            shutil.copyfile(spec / OBJECTIVE_FILE, tmp / OBJECTIVE_FILE)
        write_json(tmp / MERGE_FILE, {"source": str(spec), "lora": lora, "max_abs_difference": difference}, indent=2)
    return difference


def run(args: argparse.Namespace) -> int:
    difference = merge_run(args.run, args.out)
    print(f"merged the LoRA adapters of {args.run} into {args.out} (largest embedding difference from the adapter "
          f"model: {difference:.2g})")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("merge", help="fold a LoRA run's adapters into its weights, as a run without LoRA",
                       description="Fold the LoRA adapters of a run (or checkpoint) into its base weights, "
                                   "W + (alpha / rank) B A, and write a complete run directory whose config has "
                                   "LoRA off; lipkit eval, lipkit.load, lipkit export and train --init read it.")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("out", metavar="OUT", help="run directory to write (must not exist yet, or be empty)")
    p.set_defaults(func=run)
