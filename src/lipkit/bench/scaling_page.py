"""`lipkit bench scaling`: print a config's prediction, or (--doc PATH) write docs/scaling.md:
ViT-B/16 CLIP and xCLIP from 8 to 1024 H100s at batch 32,768, where the feature all-gather and the
BatchNorm all-reduce start to count, and the model's byte counts beside those measured on gloo."""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import tempfile
from collections import Counter
from pathlib import Path

from lipkit.bench.flops import heads_forward_flops, objective_forward_flops, text_forward_flops, vision_forward_flops
from lipkit.bench.scaling import (
    CLUSTERS, GROUPS, H100, SHORT, Cluster, ScalingReport, collective_seconds, parse_gpus, predict,
)
from lipkit.bench.step_shape import step_shape
from lipkit.bench.step_traffic import (
    BATCH_NORM, DTYPE_BYTES, FEATURES, GRADIENTS, meta_model, step_collectives, tower_parameters,
)
from lipkit.config import ConfigError, load_config
from lipkit.errors import UsageError
from lipkit.files import atomic_write

PAGE_COMMAND = "lipkit bench scaling --doc docs/scaling.md"
SWEEP = [8, 16, 32, 64, 128, 256, 512, 1024]
PRESETS = ("vit-b-16", "xclip-vit-b-16")
SOURCES = [
    ("NVIDIA H100 Tensor Core GPU datasheet",
     "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet",
     "H100 SXM: FP32 67 TFLOPS, TF32 Tensor Core 989 TFLOPS and BF16/FP16 Tensor Core 1,979 TFLOPS *with sparsity* "
     "(dense: half), NVLink 900 GB/s"),
    ("NVIDIA H100 Tensor Core GPU Architecture (Hopper whitepaper)",
     "https://resources.nvidia.com/en-us-tensor-core/gtc22-whitepaper-hopper",
     "H100 SXM5 dense peaks: FP32 66.9, TF32 494.7, BF16/FP16 989.4 TFLOPS; fourth-generation NVLink, 18 links, "
     "900 GB/s total bandwidth per GPU"),
    ("NVIDIA DGX H100 User Guide, introduction and network modules",
     "https://docs.nvidia.com/dgx/dgxh100-user-guide/introduction-to-dgxh100.html",
     "8 H100 SXM5 GPUs on NVLink 4 / NVSwitch; 8 single-port ConnectX-7 cards for the compute fabric, each "
     "paired with one GPU, 400 Gb/s InfiniBand NDR each"),
    ("NVIDIA ConnectX-7 adapter datasheet", "https://www.nvidia.com/en-us/networking/ethernet/connectx-7/",
     "up to 400 Gb/s InfiniBand NDR per port"),
    ("nccl-tests, Performance", "https://github.com/NVIDIA/nccl-tests/blob/master/doc/PERFORMANCE.md",
     "bus bandwidth: a ring all-reduce moves 2(n-1)/n of the buffer through each GPU's link, all-gather and "
     "reduce-scatter (n-1)/n, broadcast 1"),
    ("Massively Scale Your Deep Learning Training with NCCL 2.4 (NVIDIA blog)",
     "https://developer.nvidia.com/blog/massively-scale-deep-learning-training-nccl-2-4/",
     "double binary trees: all-reduce latency logarithmic in the number of nodes, NCCL choosing ring or tree by size"),
]


# --------------------------------------------------------------------------- the command
def _cluster(args: argparse.Namespace) -> Cluster:
    if args.accelerator not in CLUSTERS:
        raise ConfigError(f"--accelerator: unknown accelerator {args.accelerator!r}; known: {', '.join(CLUSTERS)}")
    cluster = CLUSTERS[args.accelerator]
    if args.network_latency_us is not None:
        cluster = dataclasses.replace(cluster, network_latency_us=args.network_latency_us)
    return cluster


def run_scaling(args: argparse.Namespace) -> dict:
    if args.doc:
        write_page(Path(args.doc))
        print(f"wrote {args.doc}")
        return {"doc": args.doc}
    if not args.config:
        raise UsageError("scaling needs --config (a preset such as vit-b-16, or a YAML file), or --doc PATH")
    report = predict(load_config(args.config, args.set or []), parse_gpus(args.gpus), name=args.config,
                     global_batch=args.batch, precision=args.precision, cluster=_cluster(args), mfu=args.mfu)
    print("\n".join(report.lines()))
    return report.to_dict()


# --------------------------------------------------------------------------- the page
def _ms(x: float) -> str:
    return f"{x:.2f}"


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB" if n >= 2**10 else f"{n} B"


def _prediction_table(report: ScalingReport, command: str) -> list[str]:
    head = ("| GPUs | nodes | pairs per GPU | compute ms | " + " | ".join(f"{SHORT[g]} ms" for g in GROUPS)
            + " | step ms | efficiency | serial step ms | serial efficiency | vs 8 GPUs |")
    rows = [f"`{command}`", "", head, "|" + "---|" * (head.count("|") - 1)]
    base = report.predictions[0]
    for p in report.predictions:
        relative = p.samples_per_s / (base.samples_per_s * p.gpus / base.gpus)
        waits = " | ".join(_ms(p.exposed_ms[g]) for g in GROUPS)
        rows.append(f"| {p.gpus} | {p.nodes} | {p.pairs_per_gpu} | {_ms(p.compute_ms)} | {waits} | {_ms(p.step_ms)} | "
                    f"**{p.efficiency:.1%}** | {_ms(p.serial_step_ms)} | {p.serial_efficiency:.1%} | {relative:.1%} |")
    return rows


def _where(report: ScalingReport, condition) -> str:
    """"from 256 GPUs on" when `condition` holds from some count to the last, else the counts
    where it holds ("at 512 GPUs"), or "" where it never does."""
    counts = [p.gpus for p in report.predictions if condition(p)]
    if not counts:
        return ""
    tail = [p.gpus for p in report.predictions][-len(counts):]
    if counts == tail:
        return f"from {counts[0]} GPUs on"
    return "at " + ", ".join(map(str, counts)) + " GPUs"


def _runs(report: ScalingReport) -> str:
    """"X from 8 to 256 GPUs, Y from 512 to 1024" for the group the step waits for longest."""
    runs: list[list] = []
    for p in report.predictions:
        if runs and runs[-1][0] == p.dominant:
            runs[-1][2] = p.gpus
        else:
            runs.append([p.dominant, p.gpus, p.gpus])
    return ", ".join(f"the {group} from {a} to {b} GPUs" if a != b else f"the {group} at {a} GPUs"
                     for group, a, b in runs)


def _share(report: ScalingReport, group: str) -> str:
    """The group's share of the step at each count, and the counts where it passes 1%, 5% and 10%."""
    shares = ", ".join(f"{p.exposed_ms[group] / p.step_ms:.1%} at {p.gpus}" for p in report.predictions)
    passes = []
    for level in (0.01, 0.05, 0.10):
        at = _where(report, lambda p: p.exposed_ms[group] / p.step_ms >= level)
        passes.append(f"at least {level:.0%} {at}" if at else f"never {level:.0%}")
    return f"{shares} GPUs (" + ", ".join(passes) + ")"


def _dominance(report: ScalingReport, label: str) -> list[str]:
    last = report.predictions[-1]
    hidden = last.comm_ms[GRADIENTS] - last.exposed_ms[GRADIENTS]
    lines = [f"- **{label}**: of the communication the step waits for, the largest part is {_runs(report)}.",
             f"  The feature all-gathers (with their backward all-reduces and the batch-size checks) take "
             f"{_share(report, FEATURES)} of the step.",
             f"  Serially the gradient all-reduce is the largest: {_ms(last.comm_ms[GRADIENTS])} ms at {last.gpus} "
             f"GPUs "
             f"against the features' {_ms(last.comm_ms[FEATURES])}, but the towers' backward hides {_ms(hidden)} ms "
             f"of it."]
    if last.comm_ms[BATCH_NORM]:
        collectives = step_collectives(step_shape(load_config(report.config), last.gpus))
        norms = [c for c in collectives if c.group == BATCH_NORM]
        over_features = _where(report, lambda p: p.exposed_ms[BATCH_NORM] > p.exposed_ms[FEATURES])
        over_gradients = _where(report, lambda p: p.exposed_ms[BATCH_NORM] > p.exposed_ms[GRADIENTS])
        versus = [f"exceed the feature all-gathers {over_features}" if over_features else
                  "stay below the feature all-gathers at every count",
                  f"exceed the gradient sync left after the overlap {over_gradients}" if over_gradients else
                  "stay below the gradient sync left after the overlap at every count"]
        lines.append(f"  The BatchNorm all-reduces ({len(norms)} per step, {_mib(sum(c.bytes for c in norms))} in all) "
                     f"are latency only: {_share(report, BATCH_NORM)} of the step; they {versus[0]}, and "
                     f"{versus[1]}.")
    return lines


def _breakdown(name: str, gpus: int, cluster: Cluster) -> list[str]:
    shape = step_shape(load_config(name), gpus)
    rows: dict[tuple[str, str], list] = {}
    for c in step_collectives(shape):
        row = rows.setdefault((c.source, c.kind), [c.group, 0, 0, 0.0])
        row[1] += 1
        row[2] += c.bytes
        row[3] += collective_seconds(c.kind, c.bytes, gpus, cluster) * 1e3
    out = ["| issued by | collective | group | count | bytes per step | ms (serial) |", "|---|---|---|---|---|---|"]
    for (source, kind), (group, count, nbytes, ms) in sorted(rows.items(), key=lambda kv: -kv[1][3]):
        out.append(f"| {source} | {kind.replace('_', '-')} | {group} | {count} | {_mib(nbytes)} | {_ms(ms)} |")
    return out


def _flops_lines() -> list[str]:
    out = ["| preset | image tower GFLOP per image | text tower GFLOP per caption | heads GFLOP per pair | "
           "objective TFLOP per step | training PFLOP per step |", "|---|---|---|---|---|---|"]
    for name in PRESETS:
        shape = step_shape(load_config(name), 8)
        report = predict(load_config(name), [8], name=name)
        out.append(f"| {name} | {vision_forward_flops(shape) / 1e9:.2f} | {text_forward_flops(shape) / 1e9:.2f} | "
                   f"{heads_forward_flops(shape) / 1e9:.4f} | {objective_forward_flops(shape) / 1e12:.2f} | "
                   f"{report.flops.total / 1e15:.3f} |")
    return out


def _measured_lines(workdir: Path) -> list[str]:
    from lipkit.bench.collective_count import CASES, measure, recorded_config

    kinds = ("all_reduce", "all_gather", "reduce_scatter", "broadcast")
    out = ["| case | processes | collectives model / measured | " + " | ".join(f"{k.replace('_', '-')} bytes"
                                                                            for k in kinds) + " | identical |",
           "|---|---|---|" + "---|" * len(kinds) + "---|"]
    counted_all = measure(CASES, workdir)
    for world_size, counted in counted_all.items():
        for case, records in counted.items():
            modelled = step_collectives(step_shape(recorded_config(workdir, world_size, case), world_size))
            model, measured = Counter(c.signature for c in modelled), Counter(records)
            cells = []
            for kind in kinds:
                mb = sum(c.bytes for c in modelled if c.kind == kind)
                sb = sum(count * n * DTYPE_BYTES[d] for (k, d, n), count in measured.items() if k == kind)
                cells.append(f"{mb:,}" if mb == sb else f"{mb:,} / {sb:,}")
            same = "yes" if model == measured else "**no**"
            out.append(f"| {case} | {world_size} | {sum(model.values())} / {sum(measured.values())} | "
                       + " | ".join(cells) + f" | {same} |")
    return out


def write_page(path: Path) -> None:
    import torch

    cluster = H100
    reports = {name: predict(load_config(name), SWEEP, name=name) for name in PRESETS}
    clip_shape = step_shape(load_config(PRESETS[0]), SWEEP[-1])
    tower_params = sum(p.numel() for p in tower_parameters(meta_model(clip_shape)))
    feature_bytes = next(c.bytes for c in step_collectives(clip_shape) if c.source == "image embeddings")
    head_bytes = next(c.bytes for c in step_collectives(step_shape(load_config(PRESETS[1]), SWEEP[-1]))
                      if c.source == "head and objective gradients")
    accumulated = predict(load_config(PRESETS[0], ["train.accum_steps=16"]), [SWEEP[0]], name=PRESETS[0]).predictions[0]
    plain = reports[PRESETS[0]].predictions[0]
    fsdp = {name: predict(load_config(name, ["train.strategy=fsdp"]), [8, 64, 512, 1024], name=name)
            for name in PRESETS}
    with tempfile.TemporaryDirectory(prefix="lipkit-scaling-") as tmp:
        measured = _measured_lines(Path(tmp))
    sweep = ",".join(map(str, SWEEP))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    g = cluster.gpus_per_node
    lines = [
        "# Scaling: predicted step time and efficiency on many GPUs",
        "",
        f"Generated by `{PAGE_COMMAND}` on {stamp} with torch {torch.__version__} (about a minute: it also "
        "trains tiny models on 2 and 4 gloo processes to check the byte counts). Every number below comes from "
        "that command; each table names the `lipkit bench scaling` command that prints its rows for any config.",
        "",
        "lipkit computes, from a config, the FLOPs of one training step and every collective it issues, with its "
        "size, and turns them into a step time on H100 nodes. The byte counts are checked against the collectives "
        "that real training steps issue on gloo: they agree exactly (last section, `tests/test_scaling.py`). The "
        "times are a model: stated hardware figures, an assumed utilisation, ring formulas.",
        "",
        "```",
        "lipkit bench scaling --config vit-b-16 --gpus 8,64,512,1024            # ViT-B/16 CLIP at batch 32,768",
        "lipkit bench scaling --config xclip-vit-b-16 --gpus 8,64,512,1024 --batch 65536 --mfu 0.35",
        "lipkit bench scaling --config my-run.yaml --set train.strategy=fsdp --gpus 64,128",
        "```",
        "",
        "## Figures and assumptions",
        "",
        "| figure | value | source |",
        "|---|---|---|",
        f"| H100 SXM dense peak, bf16 / fp16 | {cluster.peak_tflops['bf16']} TFLOP/s | [1], [2] |",
        f"| H100 SXM dense peak, tf32 | {cluster.peak_tflops['tf32']} TFLOP/s | [1], [2] |",
        f"| H100 SXM peak, fp32 (no tensor cores; PyTorch's default for fp32 matmuls) | {cluster.peak_tflops['fp32']} "
        "TFLOP/s | [1], [2] |",
        f"| GPUs per node | {g} | [3] |",
        f"| NVLink 4 bandwidth inside a node, per GPU and direction | {cluster.nvlink_gb_s:g} GB/s (900 GB/s both "
        "directions) | [1], [2] |",
        f"| InfiniBand NDR between nodes, per GPU and direction | {cluster.network_gb_s:g} GB/s (400 Gb/s, one NIC "
        "per GPU) | [3], [4] |",
        f"| latency of one ring step inside / between nodes | {cluster.nvlink_latency_us:g} / "
        f"{cluster.network_latency_us:g} µs | assumed |",
        "| model-FLOPs utilisation (MFU) | 0.4 | assumed, the same at every scale |",
        "",
        *[f"[{i}] {title}, <{url}>: {what}." for i, (title, url, what) in enumerate(SOURCES, start=1)],
        "",
        "**Compute** is the step's training FLOPs split evenly over the GPUs, at the dense peak of the precision "
        "times the MFU. FLOPs count matrix products only, 2 per multiply-add (as `torch.utils.flop_counter`); "
        "training is 3 x forward (a backward computes the gradients of a product's input and weight); the towers "
        "are lipkit's (the last block computes the pooled row's query, attention and MLP only) and captions fill "
        "the 77-token context; attention counts the whole score matrix. `tests/test_scaling.py` checks the forward "
        "count against `torch.utils.flop_counter` on the real model, FLOP for FLOP.",
        "",
        *_flops_lines(),
        "",
        f"**Communication** on n = {g} x m GPUs (m nodes) is a two-level ring, for a buffer of S bytes (B: "
        "bandwidth per GPU and direction, a: one ring step's latency):",
        "",
        "| collective | time |",
        "|---|---|",
        f"| reduce-scatter, all-gather | ({g}-1)/{g} S/B_nvlink + (m-1)/m (S/{g})/B_net + ({g}-1) a_nvlink + "
        "(m-1) a_net |",
        "| all-reduce | twice the bandwidth terms; latency the ring's 2(g-1) a_nvlink + 2(m-1) a_net or a tree's "
        "2(g-1) a_nvlink + 2 log2(m) a_net, whichever is smaller (NCCL picks by size [6]) |",
        "| broadcast | S/B_nvlink + (g-1) a_nvlink, plus S/B_net + (m-1) a_net across nodes |",
        "",
        "Inside one node these are the plain ring formulas (2(n-1)/n S/B + 2(n-1) a for an all-reduce [5]). Between "
        f"nodes each of the {g} GPUs moves 1/{g} of the buffer over its own NIC (one rail per local rank), so the "
        f"network term divides by {g}. DDP's gradient buckets (1 MiB, then 25 MiB) change how many all-reduces "
        "there are, not the bytes: the bucketing adds ring latencies only. The model buckets with DDP's own "
        "assignment function over the gradients in reverse registration order; DDP rebuckets after its first "
        "step in the order the gradients arrived, which can move a boundary by a parameter.",
        "",
        "**Step time** = compute + the collectives the step waits for. The objective's collectives (feature "
        "all-gathers and their backward all-reduces), the BatchNorm and nCLIP statistics, the heads' gradient "
        "average and the loop's small all-reduces block; the gradient sync runs under the towers' compute (DDP's "
        "buckets and FSDP's reduce-scatters and backward all-gathers under the backward, FSDP's forward all-gathers "
        "under the forward) and only what exceeds it is waited for: perfect overlap, an upper bound on efficiency. "
        "The *serial* columns add every collective, a lower bound. Efficiency is compute time / step time (1: "
        "linear scaling); *vs 8 GPUs* is throughput per GPU relative to 8 GPUs. The groups' columns are the ms the "
        "step waits for each.",
        "",
        "## ViT-B/16 CLIP and xCLIP at batch 32,768 (DDP)",
        "",
        "The presets `vit-b-16` (OpenAI CLIP ViT-B/16's towers: ViT-B/16 at 224 px; a 12-layer, 512-wide text "
        "transformer over 77 tokens; embedding 512; batch 32,768) and `xclip-vit-b-16` (the same with nCLIP's "
        "prototype heads: hidden 2048 with the global-batch BatchNorm, bottleneck 256, 4,096 prototypes).",
        "",
        "**CLIP**",
        "",
        *_prediction_table(reports["vit-b-16"], f"lipkit bench scaling --config vit-b-16 --gpus {sweep}"),
        "",
        "**xCLIP**",
        "",
        *_prediction_table(reports["xclip-vit-b-16"], f"lipkit bench scaling --config xclip-vit-b-16 --gpus {sweep}"),
        "",
        "## Where the feature all-gather and the BatchNorm all-reduce start to count",
        "",
        *_dominance(reports["vit-b-16"], "CLIP"),
        *_dominance(reports["xclip-vit-b-16"], "xCLIP"),
        "",
        f"In bytes the gradient all-reduce always dominates (one fp32 copy of the towers' {tower_params / 1e6:.1f}M "
        f"parameters, {_mib(4 * tower_params)}, against two feature buffers of {_mib(feature_bytes)}); what grows "
        "with the GPU count is the latency of the many small collectives, "
        "each paying one ring step per node, and the compute per GPU shrinks as 1/n. Where the time of one xCLIP step "
        f"at {SWEEP[-1]} GPUs goes, collective by collective (`lipkit bench scaling` prints the totals):",
        "",
        *_breakdown("xclip-vit-b-16", SWEEP[-1], cluster),
        "",
        "Two of these could shrink in lipkit itself: the batch-size all-gather that `all_gather_with_grad` runs "
        "before every feature all-gather (a check that every rank has the same batch) costs a full ring latency "
        "each time; and `average_gradients` sums the heads' gradients in float64 after the backward, where "
        f"nothing hides it ({_mib(head_bytes)} per xCLIP step, twice their float32 size). A third is gone: DDP "
        "no longer re-broadcasts the prototype heads' BatchNorm running statistics from rank 0 before every "
        "step, since the global-batch statistics make them equal on every rank (`LIPModel.head_buffers`, "
        "`tests/test_ddp_buffers.py`); with transformer towers DDP now broadcasts nothing.",
        "",
        "## FSDP",
        "",
        "FSDP2 shards every transformer block (lipkit.train.parallel): each block's parameters are all-gathered "
        "before its forward and again before its backward, and its gradients reduce-scattered: 1.5 x DDP's bytes, "
        "in 3 collectives per block instead of a few buckets, and each shard padded to a multiple of the GPU "
        "count on its first dimension. For towers of ViT-B/16's size, which fit one GPU, DDP scales further:",
        "",
        "**CLIP, FSDP**",
        "",
        *_prediction_table(fsdp["vit-b-16"], "lipkit bench scaling --config vit-b-16 --set train.strategy=fsdp"),
        "",
        "**xCLIP, FSDP**",
        "",
        *_prediction_table(fsdp["xclip-vit-b-16"], "lipkit bench scaling --config xclip-vit-b-16 --set "
                                                    "train.strategy=fsdp"),
        "",
        "## How much rests on the assumptions",
        "",
        *_sensitivity(),
        "",
        "## The byte counts, checked against real steps",
        "",
        "`lipkit.bench.collective_count` counts every collective at the process-group level (a kernel for each "
        "c10d operator: it sees torch.distributed's calls, DDP's C++ reducer and buffer broadcast, FSDP2's "
        "all-gathers and reduce-scatters, and the collectives DTensor issues inside other operators) during the "
        "third step of a real `lipkit train` run of tiny towers on Fashion-MNIST, on 2 and 4 gloo processes. The "
        "model's list of (collective, dtype, elements) must equal the counted one, collective for collective "
        "(`tests/test_scaling.py`); the bytes:",
        "",
        *measured,
        "",
        "A step here is one turn of the training loop: forward, objective, backward, gradient averaging, "
        "optimizer, the loop's stop/checkpoint decision and the next batch's data-health counts. Left out: steps "
        "that log a metrics record (one 1-element all-reduce per loss term and diagnostic, every "
        "`train.log_every_steps`), checkpoints, evaluation during training, and the first two steps (DDP builds "
        "and then rebuilds its buckets; FSDP2 sets itself up).",
        "",
        "## What the model leaves out",
        "",
        f"- Memory: at {plain.gpus} GPUs each would hold the activations of {plain.pairs_per_gpu:,} pairs at once; "
        "`lipkit bench max-batch --config vit-b-16 --memory-gib 78` measures what fits one GPU (on a GPU), and "
        "`train.accum_steps` reaches the rest. The feature-cache accumulation runs the towers once more without "
        f"gradient (4 x forward instead of 3 x): `lipkit bench scaling --config vit-b-16 --gpus {plain.gpus} --set "
        f"train.accum_steps=16` ({accumulated.pairs_per_gpu} pairs per micro-step) predicts "
        f"{_ms(accumulated.step_ms)} ms a step instead of {_ms(plain.step_ms)}.",
        "- Utilisation that changes with the per-GPU batch (at 1,024 GPUs each processes 32 pairs), kernel "
        "launch and optimizer time, data loading, stragglers and jitter.",
        "- NCCL's protocols (LL, LL128, Simple), NVLink SHARP and in-network reductions, congestion in the network.",
        "- Configs it does not describe are refused in one line: pretrained towers (EfficientNet, MiniLM), LiT "
        "locking, LoRA, several image views, objectives other than clip, siglip, nclip and xclip.",
        "",
    ]
    atomic_write(path, lambda p: p.write_text("\n".join(lines), encoding="utf-8"))


def _sensitivity() -> list[str]:
    gpus = SWEEP[-1]
    out = ["| preset | MFU | network latency µs | step ms | efficiency | serial efficiency | command |",
           "|---|---|---|---|---|---|---|"]
    for name in PRESETS:
        for mfu, latency in ((0.4, H100.network_latency_us), (0.3, H100.network_latency_us),
                             (0.5, H100.network_latency_us), (0.4, 2.0), (0.4, 10.0)):
            cluster = dataclasses.replace(H100, network_latency_us=latency)
            p = predict(load_config(name), [gpus], name=name, cluster=cluster, mfu=mfu).predictions[0]
            command = (f"lipkit bench scaling --config {name} --gpus {gpus} --mfu {mfu:g} "
                       f"--network-latency-us {latency:g}")
            out.append(f"| {name} | {mfu:g} | {latency:g} | {_ms(p.step_ms)} | {p.efficiency:.1%} | "
                       f"{p.serial_efficiency:.1%} | `{command}` |")
    return out
