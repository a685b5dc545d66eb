"""python -m lipkit.bench.memory TRAINER ARCH STEPS BATCH full|short: peak memory of building the
model and running training steps. TRAINER is open_clip or "lipkit" (the CLIP objective).

Two measures, printed as JSON:
- `peak_mib`: the most tensor bytes alive at once, from the profiler's allocation and free events
  (model, inputs, activations, gradients, optimizer state). It does not depend on how the C
  allocator pools or returns memory, so it is repeatable to the byte for a given program.
- `rss_peak_mib`: the peak resident set added after imports (what `top` shows; allocator-dependent
  and noisy by tens of MiB between runs).
"""
from __future__ import annotations

import itertools
import json
import resource
import sys


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def tensor_peak_bytes(fn) -> int:
    """Run `fn()` under the profiler; the peak of (bytes allocated - bytes freed) during it."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage),
                    key=lambda e: e.time_range.start)
    return max(itertools.accumulate((e.self_cpu_memory_usage for e in events), initial=0))


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
    from lipkit.interop.gateway import import_open_clip

    if trainer == "open_clip":
        import_open_clip()
    base = _rss_mib()
    captions = None if full else SHORT_CAPTIONS

    def build_and_train() -> None:
        torch.manual_seed(0)
        if trainer == "open_clip":
            stepper = open_clip_stepper(arch, batch, caption_tokens=captions)
        else:
            stepper = lipkit_stepper(arch, "clip", batch, caption_tokens=captions)
        for _ in range(steps):
            stepper.step()

    peak = tensor_peak_bytes(build_and_train)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mib": peak / 2**20, "rss_peak_mib": rss - base}))


if __name__ == "__main__":
    main()
