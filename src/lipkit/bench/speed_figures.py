"""Single speed figures (`lipkit bench xclip-ratio | data-share | eval-throughput`): the xCLIP/CLIP
step-time ratio on the same towers, the data-wait share of a real training run, and embedding
throughput (open_clip's too when it is importable). The head-to-head run against open_clip is
lipkit.bench.compare."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from lipkit.bench.archs import ARCHS
from lipkit.bench.harness import median, time_alternating
from lipkit.bench.steps import SHORT_CAPTIONS, lipkit_stepper, synthetic_batch


def xclip_step_ratio(arch_name: str = "tiny", rounds: int = 10, warmup: int = 2, threads: int = 2) -> dict:
    """Seconds per xCLIP step / seconds per CLIP step on the same towers and batch (xCLIP adds the
    two prototype heads, K from the default config, and the nCLIP loss; no extra views)."""
    torch.set_num_threads(threads)
    arch = ARCHS[arch_name]
    clip, xclip = lipkit_stepper(arch, "clip"), lipkit_stepper(arch, "xclip")
    times = time_alternating([clip, xclip], warmup, rounds)
    ratio = median(times["lipkit-xclip"]) / median(times["lipkit-clip"])
    return {"arch": arch_name, "clip_step_s": median(times["lipkit-clip"]),
            "xclip_step_s": median(times["lipkit-xclip"]), "xclip_over_clip": ratio}


def data_wait_share(steps: int = 60, threads: int = 2) -> dict:
    """Share of step time spent waiting for data in a real `fashion-tiny` run (default workers),
    read from the run's metrics.jsonl after the first logging window."""
    from lipkit.config import load_config
    from lipkit.train import train

    torch.set_num_threads(threads)
    cfg = load_config("fashion-tiny", [f"train.steps={steps}", "train.log_every_steps=10", "train.progress=false"])
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run")
        records = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    shares = [r["data_wait_share"] for r in records[1:]]  # the first window includes warm-up
    return {"steps": steps, "num_workers": cfg.data.num_workers, "data_wait_share": median(shares),
            "samples_per_s": median([r["samples_per_s"] for r in records[1:]])}


@torch.inference_mode()
def _embed_rate(encode, inputs: torch.Tensor, batch: int, rounds: int) -> float:
    encode(inputs[:batch])
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        encode(inputs[:batch])
        times.append(time.perf_counter() - t0)
    return batch / median(times)


def embedding_throughput(arch_name: str = "tiny", batch: int = 256, rounds: int = 5, threads: int = 2,
                         with_peer: bool = True) -> dict:
    """Images/s and texts/s of encode_image / encode_text in inference mode."""
    torch.set_num_threads(threads)
    arch = ARCHS[arch_name]
    images, tokens = synthetic_batch(arch, batch, SHORT_CAPTIONS)
    model = lipkit_stepper(arch, batch_size=2).model.eval()
    out = {"arch": arch_name, "batch": batch,
           "lipkit_images_per_s": _embed_rate(model.encode_image, images, batch, rounds),
           "lipkit_texts_per_s": _embed_rate(model.encode_text, tokens, batch, rounds)}
    if with_peer:
        from lipkit.bench.steps import open_clip_stepper

        peer = open_clip_stepper(arch, batch_size=2).model.eval()
        out["open_clip_images_per_s"] = _embed_rate(peer.encode_image, images, batch, rounds)
        out["open_clip_texts_per_s"] = _embed_rate(peer.encode_text, tokens, batch, rounds)
    return out
