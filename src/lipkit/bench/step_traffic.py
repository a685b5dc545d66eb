"""Every collective one training step of `lipkit train` issues, from the config: which, how many
elements of which type, and who issues it. tests/test_scaling.py checks the list against the
collectives counted in real steps on gloo (lipkit.bench.collective_count), element for element.

A step here is what one turn of the training loop does between two optimizer steps: the step
itself (forward, objective, backward, gradient averaging, optimizer), the loop's stop/checkpoint
decision and the next step's data-health counts. Not counted: steps that log a metrics record
(every train.log_every_steps: one 1-element all-reduce per loss term and diagnostic), checkpoint
steps, evaluation during training, the all-gather of unusable-sample names when some are met,
and the first two steps (DDP builds and then rebuilds its gradient buckets, FSDP2 initialises).

Sizes are whole buffers: the tensor all-reduced or broadcast, the all-gather's output, the
reduce-scatter's input; `lipkit.bench.scaling` turns them into time."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from lipkit.bench.step_shape import StepShape
from lipkit.models import LIPModel
from lipkit.objectives import build_objective

DTYPE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2, "int64": 8, "int32": 4, "bool": 1}
DDP_FIRST_BUCKET_BYTES = 1024 * 1024  # torch.distributed._DEFAULT_FIRST_BUCKET_BYTES
DDP_BUCKET_BYTES = 25 * 1024 * 1024  # DistributedDataParallel(bucket_cap_mb=25)
LOOP_FLAGS = 3  # lipkit.train.loop: stop requested, checkpoint due by time, evaluation due by time
DATA_COUNTS = 2  # lipkit.distributed.pool_over_ranks: unusable samples met, usable samples

# Groups, for the time model and the tables
GRADIENTS = "gradient sync"
FEATURES = "feature all-gather"
BATCH_NORM = "BatchNorm statistics"
NCLIP = "nCLIP batch statistics"
CONTROL = "small control"


@dataclass(frozen=True)
class Collective:
    kind: str  # all_reduce | all_gather | reduce_scatter | broadcast
    dtype: str  # a torch dtype's name: float32, float64, int64
    numel: int  # elements of the whole buffer (see the module docstring)
    source: str  # what issues it
    group: str  # GRADIENTS, FEATURES, ...
    # compute it can run under: "forward" / "backward" (the towers'), or "" (it waits on nothing
    # but blocks what follows: the objective's and the loop's collectives)
    overlaps: str = ""

    @property
    def bytes(self) -> int:
        return self.numel * DTYPE_BYTES[self.dtype]

    @property
    def signature(self) -> tuple[str, str, int]:
        return (self.kind, self.dtype, self.numel)


def meta_model(shape: StepShape) -> LIPModel:
    """The model the config builds, on the meta device: shapes, names and buffers, no memory."""
    built = dataclasses.replace(shape.cfg.model, heads=sorted(shape.built_heads))
    with torch.device("meta"):
        return LIPModel(built)


def step_collectives(shape: StepShape) -> list[Collective]:
    """The collectives of one step, in no particular order."""
    if shape.world_size == 1:
        return []
    model = meta_model(shape)
    objective = build_objective(shape.cfg.objective)
    out: list[Collective] = []
    out += ddp_collectives(shape, model) if shape.strategy == "ddp" else fsdp_collectives(shape, model)
    out += head_collectives(shape)
    out += objective_collectives(shape)
    loop_synced = [p for _, p in model.head_parameters() if p.requires_grad]
    loop_synced += [p for p in objective.parameters() if p.requires_grad]
    f64, k = "float64", shape.accum_steps
    out.append(Collective("all_reduce", f64, 1, "non-finite loss check", CONTROL))
    if loop_synced:  # one all-reduce of every gradient plus a has-gradient flag each (distributed.average_gradients)
        out.append(Collective("all_reduce", f64, sum(p.numel() for p in loop_synced) + len(loop_synced),
                              "head and objective gradients", GRADIENTS))
    out.append(Collective("all_reduce", f64, LOOP_FLAGS, "loop decision flags", CONTROL))
    out += [Collective("all_reduce", f64, DATA_COUNTS, "data-health counts", CONTROL)] * k
    return out


# --------------------------------------------------------------------------- the towers' wrapper
def tower_parameters(model: LIPModel) -> list[nn.Parameter]:
    return [p for tower in (model.vision, model.text) for p in tower.parameters() if p.requires_grad]


def ddp_buckets(params: list[nn.Parameter]) -> list[int]:
    """Elements per gradient bucket, bucketed as DDP does (its own assignment function) in the
    order the gradients become ready on the first step: the reverse of registration. From the
    second step DDP rebuckets in the order the first backward met them, which can move a bucket
    boundary by a parameter or so."""
    import torch.distributed as dist

    ready = list(reversed(params))
    buckets, _ = dist._compute_bucket_assignment_by_size(ready, [DDP_FIRST_BUCKET_BYTES, DDP_BUCKET_BYTES])
    return [sum(ready[i].numel() for i in bucket) for bucket in buckets]


def ddp_collectives(shape: StepShape, model: LIPModel) -> list[Collective]:
    """Gradient buckets (one all-reduce each, on the last micro-batch), and the broadcast of the
    towers' buffers from rank 0 before the step's first forward (broadcast_buffers: one flat
    tensor per dtype; an EfficientNet's BatchNorm statistics, none for transformer towers). The
    heads' buffers are equal on every rank by construction and left out of DDP."""
    dtype = shape.float_dtype
    out = [Collective("all_reduce", dtype, n, "DDP gradient bucket", GRADIENTS, "backward")
           for n in ddp_buckets(tower_parameters(model))]
    by_dtype: dict[str, int] = {}
    for b in (b for tower in (model.vision, model.text) for b in tower.buffers()):
        name = str(b.dtype).removeprefix("torch.")
        name = dtype if b.is_floating_point() else name  # float buffers follow the parameters' dtype
        by_dtype[name] = by_dtype.get(name, 0) + b.numel()
    out += [Collective("broadcast", name, n, "DDP buffer broadcast", CONTROL) for name, n in by_dtype.items()]
    return out


def fsdp_units(model: LIPModel) -> tuple[list[nn.Parameter], list[list[nn.Parameter]]]:
    """(the root's parameters, each unit's), as lipkit.train.parallel shards them: one unit per
    transformer block; the rest of the towers belongs to the root; the heads are left out."""
    from lipkit.train.parallel import shard_units

    units = [list(u.parameters()) for tower in (model.vision, model.text) for u in shard_units(tower)]
    in_units = {id(p) for unit in units for p in unit}
    root = [p for tower in (model.vision, model.text) for p in tower.parameters() if id(p) not in in_units]
    return root, units


def fsdp_buffer_numel(params: Iterable[nn.Parameter], world_size: int) -> int:
    """All-gather output (= reduce-scatter input) of a unit: FSDP2 shards each parameter on its
    first dimension in `world_size` equal chunks, the last padded."""
    return world_size * sum(math.ceil(p.shape[0] / world_size) * math.prod(p.shape[1:]) for p in params)


def fsdp_collectives(shape: StepShape, model: LIPModel) -> list[Collective]:
    """Per unit: all-gather of the parameters before each forward and again before its backward
    (units reshard after forward), reduce-scatter of the gradients on the last micro-batch. The
    root is not resharded between forward and backward; it is after each backward. With
    accumulation the feature cache adds one no-gradient forward per micro-batch."""
    n, k, dtype = shape.world_size, shape.accum_steps, shape.float_dtype
    root, units = fsdp_units(model)
    forwards = 2 * k if k > 1 else 1
    out = []
    for params, passes in [(root, 0), *[(u, 1) for u in units]]:
        numel = fsdp_buffer_numel(params, n)
        gathers_fwd = forwards if passes else k  # the root gathers once per backward it is resharded by
        gathers_bwd = k if passes else 0
        gather = "FSDP parameter all-gather"
        out += [Collective("all_gather", dtype, numel, gather, GRADIENTS, "forward")] * gathers_fwd
        out += [Collective("all_gather", dtype, numel, gather, GRADIENTS, "backward")] * gathers_bwd
        out.append(Collective("reduce_scatter", dtype, numel, "FSDP gradient reduce-scatter", GRADIENTS, "backward"))
    if shape.cfg.train.grad_clip_norm > 0:  # the sharded gradients' norms, one element per parameter
        out.append(Collective("all_reduce", dtype, len(tower_parameters(model)), "FSDP gradient-norm", CONTROL))
    return out


# --------------------------------------------------------------------------- heads and objectives
def head_collectives(shape: StepShape) -> list[Collective]:
    """The prototype heads' global-batch BatchNorm (lipkit.models.batch_norm): the mean and the
    variance all-reduced in forward, their gradients in backward, per head."""
    p = shape.cfg.model.prototypes
    if "prototypes" not in shape.run_heads or not p.batch_norm:
        return []
    one = [Collective("all_reduce", shape.float_dtype, p.hidden_dim, f"BatchNorm {stat} ({way})", BATCH_NORM)
           for stat in ("mean", "variance") for way in ("forward", "backward")]
    return one * 2


def objective_collectives(shape: StepShape) -> list[Collective]:
    name = shape.cfg.objective.name
    out = []
    if name in ("clip", "xclip"):
        out += feature_gather(shape, "image") + feature_gather(shape, "text")
    if name == "siglip":
        out += feature_gather(shape, "text")
    if name in ("nclip", "xclip"):
        out += nclip_collectives(shape)
    return out


def feature_gather(shape: StepShape, which: str) -> list[Collective]:
    """lipkit.distributed.all_gather_with_grad: every rank's batch size, the embeddings, and in
    backward the all-reduce of the gathered embeddings' gradient (each rank keeps its rows)."""
    n, rows, d = shape.world_size, shape.global_batch, shape.cfg.model.embed_dim
    dtype = shape.float_dtype
    return [Collective("all_gather", "int64", n, f"{which} batch sizes", FEATURES),
            Collective("all_gather", dtype, rows * d, f"{which} embeddings", FEATURES),
            Collective("all_reduce", dtype, rows * d, f"{which} embedding gradients", FEATURES)]


def nclip_collectives(shape: StepShape) -> list[Collective]:
    """lipkit.objectives.nclip, per modality: the balancing targets' statistics, the mean
    prediction (with its gradient under ME-MAX); then the diagnostics' two all-reduces."""
    c = shape.cfg.objective.nclip
    k, dtype = shape.cfg.model.prototypes.num_prototypes, shape.float_dtype
    per_modality = []
    if c.balance in ("sinkhorn", "sinkhorn_memax"):
        sums = [1] + [k] * c.sinkhorn_iterations  # the total, then each iteration's prototype marginals
        per_modality.append(Collective("all_reduce", dtype, 1, "Sinkhorn max logit", NCLIP))
        per_modality += [Collective("all_reduce", dtype, s, "Sinkhorn sums", NCLIP) for s in sums]
        if not c.stopgrad_target:
            per_modality += [Collective("all_reduce", dtype, s, "Sinkhorn sums (backward)", NCLIP) for s in sums]
    if c.balance == "center":
        per_modality.append(Collective("all_reduce", dtype, k, "centre update", NCLIP))
    per_modality.append(Collective("all_reduce", dtype, k, "mean prediction", NCLIP))
    if c.balance in ("memax", "sinkhorn_memax"):
        per_modality.append(Collective("all_reduce", dtype, k, "mean prediction (backward)", NCLIP))
    return per_modality * 2 + [Collective("all_reduce", "int64", k, "prototype counts", NCLIP),
                               Collective("all_reduce", dtype, 5, "diagnostic sums", NCLIP)]


def totals(collectives: Iterable[Collective]) -> dict[tuple[str, str], tuple[int, int]]:
    """(group, kind) -> (count, bytes)."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for c in collectives:
        count, size = out.get((c.group, c.kind), (0, 0))
        out[(c.group, c.kind)] = (count + 1, size + c.bytes)
    return out
