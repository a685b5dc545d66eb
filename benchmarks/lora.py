"""What LoRA saves: the step time and peak memory of training a CLIP with LoRA (model.lora) against
full fine-tuning of the same model, same batch, same optimizer, in one run, with the ratios.

    python benchmarks/lora.py [--arch tiny|vit-b-32] [--rank 8] [--targets attention,mlp]
                              [--batch-size N] [--rounds 20] [--page docs/performance.md]

Step time: both trainers step in this one process, alternating (A B A B ...) after warm-up, so a
change in machine speed hits both alike (lipkit.bench.harness); the median of each. Peak memory:
each trainer built and stepped 3 times in a fresh process: on CUDA the allocator's peak
(torch.cuda.max_memory_allocated), on CPU the most tensor bytes alive at once from the profiler's
allocation events (lipkit.bench.memory: repeatable to the byte). Inputs are synthetic, of the
architecture's shapes (lipkit.bench.steps), on CUDA when there is one; fp32, eager.

LoRA freezes every base weight: no weight gradients and no AdamW state for them, and the backward
skips their weight-gradient matmuls; the adapters add two thin matmuls per adapted layer. A ratio
under 1 is LoRA's saving. Timings from a shared machine are not speed figures: run it alone.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from lipkit.bench.archs import ARCHS, BenchArch
from lipkit.bench.harness import median, time_alternating
from lipkit.bench.memory import tensor_peak_bytes
from lipkit.bench.page_sections import replace_section
from lipkit.bench.steps import OPTIM, SHORT_CAPTIONS, Stepper, synthetic_batch
from lipkit.config import LoraConfig, LoraTargetsConfig, ObjectiveConfig

SECTION = "## LoRA against full fine-tuning"
MEMORY_STEPS = 3


def lora_config(args: argparse.Namespace) -> LoraConfig:
    targets = [t for t in args.targets.split(",") if t]
    return LoraConfig(enabled=True, rank=args.rank, alpha=2.0 * args.rank,
                      targets=LoraTargetsConfig(image=list(targets), text=list(targets)))


def stepper(arch: BenchArch, lora: LoraConfig | None, batch_size: int, device: torch.device) -> Stepper:
    """One CLIP training step of `arch` (every weight, or LoRA's adapters and the heads)."""
    from lipkit.models import LIPModel
    from lipkit.objectives import build_objective
    from lipkit.train.optim import build_optimizer

    objective = build_objective(ObjectiveConfig(name="clip")).to(device)
    cfg = arch.lipkit_config(tuple(sorted(objective.required_heads)))
    if lora is not None:
        cfg.lora = lora
    model = LIPModel(cfg).to(device).train()
    optimizer = build_optimizer([model, objective], OPTIM)
    images, tokens = (t.to(device) for t in synthetic_batch(arch, batch_size, SHORT_CAPTIONS))

    def step() -> float:
        loss = objective(model(images, tokens, heads=objective.required_heads))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.clamp_logit_scale()
        return loss.item()  # waits for the device

    return Stepper("LoRA" if lora is not None else "full", model, step)


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def child(args: argparse.Namespace) -> None:
    """Peak memory of building one trainer and taking MEMORY_STEPS steps, printed as JSON."""
    device = torch.device(args.device)
    arch, lora = ARCHS[args.arch], lora_config(args) if args.child == "lora" else None

    def build_and_train() -> None:
        torch.manual_seed(0)
        s = stepper(arch, lora, args.batch_size or arch.batch_size, device)
        for _ in range(MEMORY_STEPS):
            s.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        build_and_train()
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = tensor_peak_bytes(build_and_train)
    print(json.dumps({"peak_mib": peak / 2**20}))


def peak_memory_mib(kind: str, argv: list[str]) -> float:
    out = subprocess.run([sys.executable, __file__, *argv, "--child", kind], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny", choices=sorted(ARCHS))
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", default="attention", help="comma-separated, of attention and mlp (both towers)")
    parser.add_argument("--batch-size", type=int, default=0, help="0: the architecture's own")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--page", type=Path, help=f"(re)write the section {SECTION!r} of this page")
    parser.add_argument("--child", choices=("full", "lora"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    arch, lora = ARCHS[args.arch], lora_config(args)
    batch = args.batch_size or arch.batch_size
    device = torch.device(args.device)
    argv = ["--arch", args.arch, "--rank", str(args.rank), "--targets", args.targets, "--batch-size", str(batch),
            "--device", args.device]

    torch.manual_seed(0)
    full, adapted = stepper(arch, None, batch, device), stepper(arch, lora, batch, device)
    times = time_alternating([full, adapted], warmup=args.warmup, rounds=args.rounds)
    ms = {name: 1000 * median(t) for name, t in times.items()}
    memory = {name: peak_memory_mib(name.lower(), argv) for name in ("full", "LoRA")}
    params = {"full": trainable(full.model), "LoRA": trainable(adapted.model)}

    setting = (f"{args.arch} (batch {batch}), CLIP, AdamW, fp32 eager on {device.type}"
               f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}; "
               f"LoRA rank {args.rank}, alpha {2 * args.rank}, on the {args.targets.replace(',', ' and ')} "
               f"projections of both towers, the heads trained; median of {args.rounds} alternating steps")
    table = ["| | trainable parameters | ms per step | peak memory (MiB) |", "|---|---:|---:|---:|"]
    for name in ("full", "LoRA"):
        table.append(f"| {name} | {params[name]:,} | {ms[name]:.1f} | {memory[name]:.0f} |")
    table.append(f"| **LoRA / full** | {params['LoRA'] / params['full']:.4f} | **{ms['LoRA'] / ms['full']:.2f}** | "
                 f"**{memory['LoRA'] / memory['full']:.2f}** |")
    command = "python benchmarks/lora.py " + " ".join(argv)
    print(setting)
    print("\n".join(table))
    print(f"\n$ {command}")
    if args.page:
        write_section(args.page, setting, table, command)


def write_section(page: Path, setting: str, table: list[str], command: str) -> None:
    """Replace (or add) this benchmark's section of `page`; benchmarks/run_all.py keeps it."""
    import datetime

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    replace_section(page, SECTION, [f"`{command} --page {page}` on {now}, torch {torch.__version__}: {setting}.", "",
                                    *table])


if __name__ == "__main__":
    main()
