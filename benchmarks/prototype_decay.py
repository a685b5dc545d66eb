"""Does excluding nCLIP's prototype matrices from weight decay help? Trains nCLIP alone on
fashion-tiny (the preset's 470 steps) with the prototypes decayed (lipkit's default: every matrix
is) and not decayed, for each seed, and prints the `collapse` task's figures on the 10k test images.

    python benchmarks/prototype_decay.py --seeds 0 1 --out runs/prototype-decay

(docs/guides/objectives.md "nCLIP: the default, and seeing collapse" quotes its output.)
"""
from __future__ import annotations

import argparse
from pathlib import Path

import lipkit.train.optim as optim
from lipkit.config import load_config
from lipkit.eval.registry import PROTOTYPE_COLLAPSE
from lipkit.eval.runner import evaluate_run
from lipkit.train import train

DECAYED_GROUP, UNDECAYED_GROUP = 0, 1  # lipkit.train.optim.param_groups: matrices, then the rest


def prototypes_undecayed(param_groups):
    """`param_groups` with both prototype matrices moved to the group without weight decay."""
    def groups(modules, weight_decay):
        out = param_groups(modules, weight_decay)
        model = modules[0]
        ids = {id(model.image_prototypes.prototypes), id(model.text_prototypes.prototypes)}
        moved = [p for p in out[DECAYED_GROUP]["params"] if id(p) in ids]
        assert len(moved) == 2, "the prototype matrices were not in the decayed group"
        out[DECAYED_GROUP]["params"] = [p for p in out[DECAYED_GROUP]["params"] if id(p) not in ids]
        out[UNDECAYED_GROUP]["params"] = out[UNDECAYED_GROUP]["params"] + moved
        return out
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=Path("runs/prototype-decay"))
    args = parser.parse_args()
    default = optim.param_groups
    print("| prototypes | seed | image prototypes used | image I/log C | image NMI |")
    print("|---|---|---|---|---|")
    for label, groups in (("decayed", default), ("not decayed", prototypes_undecayed(default))):
        optim.param_groups = groups
        for seed in args.seeds:
            run = args.out / f"{label.replace(' ', '-')}-s{seed}"
            cfg = load_config("fashion-tiny", ["objective.name=nclip", f"train.seed={seed}", "train.progress=false"])
            train(cfg, run, overwrite=True)
            (m,) = [r["metrics"] for r in evaluate_run(run, ["collapse"]) if r["task"] == PROTOTYPE_COLLAPSE]
            print(f"| {label} | {seed} | {m['image_distinct_prototypes']} | "
                  f"{m['image_mutual_information_ratio']:.2f} | {m['image_label_nmi']:.2f} |", flush=True)
    optim.param_groups = default


if __name__ == "__main__":
    main()
