"""lipkit vs open_clip on one named architecture: samples/s, ratio, memory, FLOPs, share of peak."""
from __future__ import annotations

import platform
from dataclasses import asdict, dataclass

import torch

from lipkit.bench.archs import ARCHS
from lipkit.bench.harness import flops_per_step, matmul_peak_gflops, median, peak_memory_mib, time_alternating
from lipkit.bench.steps import SHORT_CAPTIONS, lipkit_stepper, open_clip_stepper


@dataclass
class CompareResult:
    arch: str
    captions: str
    batch_size: int
    threads: int
    rounds: int
    lipkit_samples_per_s: float
    open_clip_samples_per_s: float
    ratio: float
    lipkit_peak_mib: float
    open_clip_peak_mib: float
    lipkit_gflops_per_sample: float
    open_clip_gflops_per_sample: float
    matmul_peak_gflops: float
    lipkit_share_of_peak: float
    open_clip_share_of_peak: float
    machine: str
    torch: str

    def lines(self) -> list[str]:
        return [
            f"{self.arch}: batch {self.batch_size}, {self.captions} captions, {self.threads} threads, "
            f"{self.rounds} alternating steps each",
            f"  ratio lipkit / open_clip samples/s : {self.ratio:.3f}x",
            f"  samples/s      lipkit {self.lipkit_samples_per_s:8.2f}   open_clip {self.open_clip_samples_per_s:8.2f}",
            f"  peak tensors   lipkit {self.lipkit_peak_mib:8.0f}   open_clip {self.open_clip_peak_mib:8.0f} MiB"
            f"   (ratio {self.lipkit_peak_mib / self.open_clip_peak_mib:.3f})",
            f"  GFLOP/sample   lipkit {self.lipkit_gflops_per_sample:8.3f}   open_clip {self.open_clip_gflops_per_sample:8.3f}"
            " (training step)",
            f"  share of the {self.matmul_peak_gflops:.0f} GFLOP/s matmul peak: lipkit {self.lipkit_share_of_peak:.0%},"
            f" open_clip {self.open_clip_share_of_peak:.0%}",
        ]

    def to_dict(self) -> dict:
        return asdict(self)


def compare(arch_name: str, rounds: int = 10, warmup: int = 2, threads: int = 2, memory: bool = True,
            full_captions: bool = False, progress=None) -> CompareResult:
    """`full_captions`: every caption fills the context; otherwise 10-20 tokens (SHORT_CAPTIONS)."""
    torch.set_num_threads(threads)
    arch = ARCHS[arch_name]
    caption_tokens = None if full_captions else SHORT_CAPTIONS
    torch.manual_seed(0)
    ours = lipkit_stepper(arch, caption_tokens=caption_tokens)
    peer = open_clip_stepper(arch, caption_tokens=caption_tokens)
    flops = {s.name: flops_per_step(s) / arch.batch_size / 1e9 for s in (ours, peer)}
    peak = matmul_peak_gflops()
    times = time_alternating([ours, peer], warmup=warmup, rounds=rounds, progress=progress)
    sps = {name: arch.batch_size / median(ts) for name, ts in times.items()}
    mem = {"lipkit": float("nan"), "open_clip": float("nan")}
    if memory:
        del ours, peer
        mem = {t: peak_memory_mib(t, arch_name, full_captions=full_captions) for t in mem}
    return CompareResult(
        arch=arch_name, captions="full-context" if full_captions else f"{SHORT_CAPTIONS[0]}-{SHORT_CAPTIONS[1]}-token",
        batch_size=arch.batch_size, threads=threads, rounds=rounds,
        lipkit_samples_per_s=sps["lipkit-clip"], open_clip_samples_per_s=sps["open_clip"],
        ratio=sps["lipkit-clip"] / sps["open_clip"],
        lipkit_peak_mib=mem["lipkit"], open_clip_peak_mib=mem["open_clip"],
        lipkit_gflops_per_sample=flops["lipkit-clip"], open_clip_gflops_per_sample=flops["open_clip"],
        matmul_peak_gflops=peak,
        lipkit_share_of_peak=flops["lipkit-clip"] * sps["lipkit-clip"] / peak,
        open_clip_share_of_peak=flops["open_clip"] * sps["open_clip"] / peak,
        machine=f"{platform.machine()} {platform.processor() or ''}".strip(), torch=torch.__version__,
    )
