"""`lipkit bench scaling`: predicted step time and scaling efficiency of a config on many GPUs.

Compute: the step's training FLOPs (lipkit.bench.flops) split evenly over the GPUs, at the
accelerator's dense peak for the precision times an assumed model-FLOPs utilisation (MFU).
Communication: every collective of the step (lipkit.bench.step_traffic, checked against real steps
on gloo) timed with the alpha-beta model of a two-level ring on nodes of 8 GPUs: NVLink inside a
node, one InfiniBand NIC per GPU between nodes (one "rail" per local rank). For a buffer of S bytes
over n = g x m GPUs (g per node, m nodes; B: bandwidth per GPU and direction, a: one ring step's
latency):

    reduce-scatter, all-gather   (g-1)/g S/B_nvlink + (m-1)/m (S/g)/B_net + (g-1) a_nvlink + (m-1) a_net
    all-reduce                   twice the bandwidth terms; latency the smaller of the ring's
                                 2(g-1) a_nvlink + 2(m-1) a_net and a tree's 2(g-1) a_nvlink + 2 log2(m) a_net
                                 (NCCL picks ring or tree by size; it has only rings for the other two)
    broadcast                    S/B_nvlink + (g-1) a_nvlink + [S/B_net + (m-1) a_net across nodes]

inside one node (m = 1) the plain ring formulas, 2(n-1)/n S/B + 2(n-1) a for an all-reduce.

Step time: compute + the collectives nothing hides (the objective's feature all-gathers, the
BatchNorm and nCLIP statistics, the loop's small all-reduces, the heads' gradient average) + what
of the gradient sync the towers' compute cannot hide: DDP's buckets and FSDP's reduce-scatters and
backward all-gathers under the towers' backward, FSDP's forward all-gathers under their forward
(perfect overlap, an upper bound; the "serial" figures add every collective, a lower bound).
Efficiency is compute time / step time: 1 is perfect linear scaling; memory is not modelled."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from lipkit.bench.flops import StepFlops, step_flops
from lipkit.bench.step_shape import StepShape, step_shape
from lipkit.bench.step_traffic import BATCH_NORM, CONTROL, FEATURES, GRADIENTS, NCLIP, Collective, step_collectives
from lipkit.config import ConfigError, RunConfig

GROUPS = (GRADIENTS, FEATURES, BATCH_NORM, NCLIP, CONTROL)
SHORT = {GRADIENTS: "gradients", FEATURES: "features", BATCH_NORM: "BatchNorm", NCLIP: "nCLIP", CONTROL: "control"}


@dataclass(frozen=True)
class Cluster:
    """An accelerator and the network between them. Bandwidths are per GPU and direction."""

    name: str
    peak_tflops: dict[str, float]  # dense (no structured sparsity), by precision
    gpus_per_node: int
    nvlink_gb_s: float
    network_gb_s: float
    nvlink_latency_us: float  # one ring step inside a node (assumed)
    network_latency_us: float  # one ring step between nodes (assumed)


# NVIDIA H100 SXM5 (docs/scaling.md cites the sources): dense peaks from the Hopper architecture
# whitepaper (the datasheet's 989 / 1,979 TFLOPS are with 2:4 sparsity, twice the dense rate);
# NVLink 4: 900 GB/s per GPU both directions together; DGX H100: 8 GPUs and 8 ConnectX-7 400 Gb/s
# InfiniBand NDR ports, one per GPU (50 GB/s each way). The latencies are assumptions.
H100 = Cluster(
    name="h100", peak_tflops={"fp64": 66.9, "fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    gpus_per_node=8, nvlink_gb_s=450.0, network_gb_s=50.0, nvlink_latency_us=1.0, network_latency_us=5.0,
)
CLUSTERS = {"h100": H100}
DEFAULT_MFU = 0.4


def layout(gpus: int, cluster: Cluster) -> tuple[int, int]:
    """(GPUs per node, nodes); a one-line error for a count that does not fill whole nodes."""
    g = cluster.gpus_per_node
    if gpus < 1 or (gpus > g and gpus % g):
        raise ConfigError(f"--gpus: {gpus} GPUs do not fill whole nodes of {g}; give 1 to {g} or a multiple of {g}")
    return (gpus, 1) if gpus <= g else (g, gpus // g)


def collective_seconds(kind: str, nbytes: float, gpus: int, cluster: Cluster) -> float:
    """The module docstring's formulas."""
    if gpus == 1:
        return 0.0
    g, m = layout(gpus, cluster)
    nv, net = cluster.nvlink_gb_s * 1e9, cluster.network_gb_s * 1e9
    a_nv, a_net = cluster.nvlink_latency_us * 1e-6, cluster.network_latency_us * 1e-6
    intra, intra_latency = (g - 1) / g * nbytes / nv, (g - 1) * a_nv
    inter, inter_latency = (m - 1) / m * nbytes / g / net, (m - 1) * a_net
    if kind in ("all_gather", "reduce_scatter"):
        return intra + inter + intra_latency + inter_latency
    if kind == "all_reduce":
        tree_latency = 2 * intra_latency + (2 * math.ceil(math.log2(m)) * a_net if m > 1 else 0.0)
        return 2 * (intra + inter) + min(2 * (intra_latency + inter_latency), tree_latency)
    if kind == "broadcast":
        return nbytes / nv + intra_latency + ((nbytes / net + inter_latency) if m > 1 else 0.0)
    raise ValueError(f"no cost formula for a {kind}")


@dataclass
class Prediction:
    gpus: int
    nodes: int
    pairs_per_gpu: int  # per micro-step
    compute_ms: float
    comm_ms: dict[str, float]  # every collective's time, by group
    exposed_ms: dict[str, float]  # what of it the step waits for (the gradient sync's overlap taken off)
    collectives: int
    bytes_per_step: int  # all buffers of the step, one GPU's view
    hidden_ms: float  # communication the towers' compute hides
    step_ms: float  # compute + the communication not hidden
    serial_step_ms: float  # compute + all communication
    samples_per_s: float
    dominant: str  # the group the step waits for longest

    @property
    def efficiency(self) -> float:
        return self.compute_ms / self.step_ms

    @property
    def serial_efficiency(self) -> float:
        return self.compute_ms / self.serial_step_ms


@dataclass
class ScalingReport:
    config: str
    objective: str
    strategy: str
    global_batch: int
    precision: str
    cluster: Cluster
    mfu: float
    flops: StepFlops
    predictions: list[Prediction] = field(default_factory=list)

    def lines(self) -> list[str]:
        c, f = self.cluster, self.flops
        peak = c.peak_tflops[self.precision]
        share = ", ".join(f"{name} {part / f.total:.1%}" for name, part in
                          (("image tower", f.vision), ("text tower", f.text), ("heads", f.heads),
                           ("objective", f.objective)))
        out = [f"{self.config} ({self.objective}, {self.strategy}): global batch {self.global_batch}, "
               f"{self.precision} on "
               f"{c.name} ({peak:g} TFLOP/s dense peak x MFU {self.mfu:g}), {c.gpus_per_node} GPUs per node, NVLink "
               f"{c.nvlink_gb_s:g} GB/s, network {c.network_gb_s:g} GB/s per GPU and direction",
               f"  training FLOPs per step: {f.total / 1e15:.3f} PFLOP ({share})",
               "  ms the step waits for each group of collectives (the gradient sync's time under the towers' compute "
               "taken off); serial: every collective added",
               "   GPUs  pairs/GPU  compute ms  " + "  ".join(SHORT[g] for g in GROUPS)
               + "   step ms  serial ms  efficiency  serial eff.  samples/s"]
        for p in self.predictions:
            waits = "  ".join(f"{p.exposed_ms[g]:{len(SHORT[g])}.2f}" for g in GROUPS)
            out.append(f"  {p.gpus:5d}  {p.pairs_per_gpu:9d}  {p.compute_ms:10.2f}  {waits}  {p.step_ms:8.2f}  "
                       f"{p.serial_step_ms:9.2f}  {p.efficiency:10.1%}  {p.serial_efficiency:11.1%}  "
                       f"{p.samples_per_s:9.0f}")
        return out

    def to_dict(self) -> dict:
        return {"config": self.config, "objective": self.objective, "strategy": self.strategy,
                "global_batch": self.global_batch, "precision": self.precision, "cluster": asdict(self.cluster),
                "mfu": self.mfu, "flops": asdict(self.flops) | {"total": self.flops.total},
                "predictions": [asdict(p) | {"efficiency": p.efficiency, "serial_efficiency": p.serial_efficiency}
                                for p in self.predictions]}


def predict_one(shape: StepShape, cluster: Cluster, mfu: float) -> Prediction:
    n = shape.world_size
    g, m = layout(n, cluster)
    rate = cluster.peak_tflops[shape.precision] * 1e12 * mfu  # FLOP/s per GPU
    flops = step_flops(shape)
    compute = flops.total / n / rate
    tower_passes = 4 if shape.accum_steps > 1 else 3
    forward_window = flops.towers / tower_passes * (tower_passes - 2) / n / rate
    backward_window = flops.towers / tower_passes * 2 / n / rate
    collectives: list[Collective] = step_collectives(shape)
    seconds = [(c, collective_seconds(c.kind, c.bytes, n, cluster)) for c in collectives]
    by_group = {group: sum(t for c, t in seconds if c.group == group) for group in GROUPS}
    exposed = {group: sum(t for c, t in seconds if c.group == group and not c.overlaps) for group in GROUPS}
    under_forward = sum(t for c, t in seconds if c.overlaps == "forward")
    under_backward = sum(t for c, t in seconds if c.overlaps == "backward")
    # only the gradient sync overlaps (step_traffic): what the towers' compute cannot hide is its
    exposed[GRADIENTS] += max(0.0, under_forward - forward_window) + max(0.0, under_backward - backward_window)
    total_comm, waited = sum(t for _, t in seconds), sum(exposed.values())
    step = compute + waited
    return Prediction(
        gpus=n, nodes=m, pairs_per_gpu=shape.micro_batch, compute_ms=compute * 1e3,
        comm_ms={k: v * 1e3 for k, v in by_group.items()}, exposed_ms={k: v * 1e3 for k, v in exposed.items()},
        collectives=len(collectives), bytes_per_step=sum(c.bytes for c in collectives),
        hidden_ms=(total_comm - waited) * 1e3, step_ms=step * 1e3, serial_step_ms=(compute + total_comm) * 1e3,
        samples_per_s=shape.global_batch / step, dominant=max(exposed, key=exposed.get) if total_comm else "",
    )


def predict(cfg: RunConfig, gpus: list[int], *, name: str = "", global_batch: int = 0, precision: str = "",
            cluster: Cluster = H100, mfu: float = DEFAULT_MFU) -> ScalingReport:
    if not 0 < mfu <= 1:
        raise ConfigError(f"--mfu: must be in (0, 1], got {mfu}")
    batch, k = global_batch or cfg.train.batch_size, cfg.train.accum_steps
    for n in gpus:
        layout(n, cluster)
        if batch % (n * k):
            where = "--batch" if global_batch else "train.batch_size"
            raise ConfigError(f"{where} {batch} does not split over {n} GPUs x train.accum_steps {k}: "
                              f"it must be a multiple of {n * k}")
    shapes = [step_shape(cfg, n, global_batch, precision) for n in gpus]
    if shapes[0].precision not in cluster.peak_tflops:
        raise ConfigError(f"--precision {shapes[0].precision}: no {cluster.name} peak for it")
    report = ScalingReport(config=name, objective=cfg.objective.name, strategy=cfg.train.strategy,
                           global_batch=shapes[0].global_batch, precision=shapes[0].precision, cluster=cluster,
                           mfu=mfu, flops=step_flops(shapes[0]))
    report.predictions = [predict_one(s, cluster, mfu) for s in shapes]
    return report


def parse_gpus(text: str) -> list[int]:
    try:
        gpus = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--gpus: expected comma-separated GPU counts such as 8,64,512, got {text!r}") from None
    if not gpus or min(gpus) < 1:
        raise ConfigError(f"--gpus: expected GPU counts >= 1, got {text!r}")
    return gpus
