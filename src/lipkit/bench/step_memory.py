"""python -m lipkit.bench.step_memory CONFIG BATCH [KEY=VALUE ...]: peak memory (GiB) of two
training steps of CONFIG's model and objective at BATCH, on synthetic inputs of its shapes. On
CUDA the allocator's peak; on CPU the peak resident set added after imports."""
from __future__ import annotations

import json
import resource
import sys


def _rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


def main() -> None:
    config, batch, overrides = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    import torch

    from lipkit.config import load_config
    from lipkit.models import LIPModel
    from lipkit.objectives import build_objective
    from lipkit.train.optim import build_optimizer

    cfg = load_config(config, overrides)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = _rss_gib()
    objective = build_objective(cfg.objective).to(device)
    cfg.model.heads = cfg.model.heads or sorted(objective.required_heads)
    v, t = cfg.model.vision, cfg.model.text
    cfg.model.text.vocab_size = max(t.vocab_size, 300)
    model = LIPModel(cfg.model).to(device)
    optimizer = build_optimizer([model, objective], cfg.train)
    images = torch.randn(batch, v.channels, v.image_size, v.image_size, device=device)
    tokens = torch.randint(3, t.vocab_size, (batch, t.context_length), device=device)
    for _ in range(2):
        loss = objective(model(images, tokens, heads=objective.required_heads))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20 - base
    print(json.dumps({"peak_gib": peak}))


if __name__ == "__main__":
    main()
