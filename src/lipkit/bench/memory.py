"""python -m lipkit.bench.memory TRAINER ARCH STEPS BATCH full|short: peak RSS added by training
steps. TRAINER is open_clip or "lipkit" (the CLIP objective)."""
from __future__ import annotations

import json
import resource
import sys


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def main() -> None:
    trainer, arch_name, steps, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) or None
    full = sys.argv[5] == "full"
    import torch

    torch.set_num_threads(2)
    from lipkit.bench.archs import ARCHS
    from lipkit.bench.steps import SHORT_CAPTIONS, lipkit_stepper, open_clip_stepper

    arch = ARCHS[arch_name]
    # Both trainers' imports happen before the baseline: only the model and its steps count.
    import lipkit.models  # noqa: F401
    import lipkit.objectives  # noqa: F401
    import lipkit.train.optim  # noqa: F401
    from lipkit.bench.peer import import_open_clip

    if trainer == "open_clip":
        import_open_clip()
    base = _rss_mib()
    captions = None if full else SHORT_CAPTIONS
    if trainer == "open_clip":
        stepper = open_clip_stepper(arch, batch, caption_tokens=captions)
    else:
        stepper = lipkit_stepper(arch, "clip", batch, caption_tokens=captions)
    for _ in range(steps):
        stepper.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mib": peak - base}))


if __name__ == "__main__":
    main()
