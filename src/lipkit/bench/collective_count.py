"""Count the collectives real training steps issue, at the ProcessGroup level, on gloo.

Every collective reaches the process group through one of the dispatcher's c10d operators:
torch.distributed's functions, DDP's C++ reducer (gradient buckets) and buffer broadcast, FSDP2's
all-gathers and reduce-scatters, the functional collectives DTensor issues inside other operators
(the sharded gradient norm). `CollectiveCounter` registers a Python kernel for every c10d
operator at the BackendSelect dispatch key: a key in every thread's dispatch keys by default that
every other operator falls through, below autograd and the Python key, so calls made inside other
operators' kernels pass it too. The kernel notes the call and hands it on with the GIL released
(holding the GIL while gloo queues the work can deadlock with gloo's worker threads, which need it
to free tensors).

`count_train_step` runs `lipkit.train.train` and keeps what one chosen step issued; `measure` runs
named cases in spawned gloo processes (tests/test_scaling.py, `lipkit bench scaling --doc`)."""
from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path

import torch

# operator -> (kind, the argument holding the whole buffer: see lipkit.bench.step_traffic)
PAYLOAD = {
    "allreduce_": ("all_reduce", "tensors"), "allreduce_coalesced_": ("all_reduce", "tensors"),
    "allgather_": ("all_gather", "output_tensors"), "_allgather_base_": ("all_gather", "output_tensor"),
    "allgather_coalesced_": ("all_gather", "output_lists"),
    "allgather_into_tensor_coalesced_": ("all_gather", "outputs"),
    "reduce_scatter_": ("reduce_scatter", "input_tensors"), "_reduce_scatter_base_": ("reduce_scatter", "input_tensor"),
    "reduce_scatter_tensor_coalesced_": ("reduce_scatter", "inputs"),
    "broadcast_": ("broadcast", "tensors"),
}
NOT_COLLECTIVES = ("check_for_nan",)
MEASURED_STEP = 3  # the first step after DDP's bucket rebuild (step 2) and FSDP2's lazy set-up (step 1)

# Tiny towers on Fashion-MNIST; widths, context and the trained vocabulary leave first dimensions
# that 4 does not divide, so FSDP2 pads its shards
MEASURE_BASE = [
    f"train.steps={MEASURED_STEP + 1}", "train.batch_size=8", "train.warmup_steps=1", "train.log_every_steps=1000",
    "train.progress=false", "data.train_limit=64", "model.vision.width=34", "model.vision.layers=2",
    "model.vision.heads=2", "model.text.width=30", "model.text.layers=2", "model.text.heads=2",
    "model.text.context_length=17", "model.embed_dim=16", "model.prototypes.num_prototypes=8",
    "model.prototypes.hidden_dim=32", "model.prototypes.bottleneck_dim=8",
]
# world size -> case -> overrides on MEASURE_BASE
CASES: dict[int, dict[str, list[str]]] = {
    2: {"ddp-clip": ["objective.name=clip", "train.strategy=ddp"],
        "fsdp-xclip-clipped": ["objective.name=xclip", "train.strategy=fsdp", "train.grad_clip_norm=1.0"],
        "ddp-nclip-sinkhorn-fp64": ["objective.name=nclip", "train.strategy=ddp", "train.precision=fp64",
                                    "objective.nclip.balance=sinkhorn", "objective.nclip.stopgrad_target=false"]},
    4: {"ddp-xclip": ["objective.name=xclip", "train.strategy=ddp"],
        "fsdp-clip": ["objective.name=clip", "train.strategy=fsdp"],
        "fsdp-xclip-accum2": ["objective.name=xclip", "train.strategy=fsdp", "train.accum_steps=2"],
        "ddp-siglip-accum2": ["objective.name=siglip", "train.strategy=ddp", "train.accum_steps=2"]},
}
PRESET = "fashion-tiny"

Signature = tuple[str, str, int]  # (kind, dtype, elements), as lipkit.bench.step_traffic.Collective.signature


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def signature(op: str, arguments: dict) -> Signature:
    """What a c10d operator call moves: its kind, dtype and the elements of its whole buffer."""
    kind, argument = PAYLOAD.get(op, (op, None))
    tensors = _tensors(arguments[argument]) if argument else _tensors(list(arguments.values()))
    dtype = str(tensors[0].dtype).removeprefix("torch.") if tensors else ""
    return (kind, dtype, sum(t.numel() for t in tensors))


class CollectiveCounter:
    """While entered, `records` gets the signature of every collective this thread issues while
    `recording` is true (module docstring)."""

    KEY = torch._C.DispatchKey.BackendSelect  # included by default: c10::default_included_set

    def __init__(self):
        self.records: list[Signature] = []
        self.recording = False
        self._library = None

    def __enter__(self) -> "CollectiveCounter":
        self._library = torch.library.Library("c10d", "IMPL")
        below = torch._C._dispatch_keyset_full_after(self.KEY)
        for full_name in torch._C._dispatch_get_all_op_names():
            namespace, _, name = full_name.partition("::")
            if namespace != "c10d" or name in NOT_COLLECTIVES:
                continue
            handle = getattr(torch.ops.c10d, name).default._handle
            names = [a.name for a in handle.schema().arguments]

            def kernel(keys, *args, _handle=handle, _op=name, _names=names, **kwargs):
                if self.recording:
                    self.records.append(signature(_op, {**dict(zip(_names, args)), **kwargs}))
                return _handle.redispatch_boxed(keys & below, *args, **kwargs)

            self._library.impl(name, kernel, "BackendSelect", with_keyset=True)
        return self

    def __exit__(self, *exc) -> None:
        self._library._destroy()
        self._library = None


@contextmanager
def _marking_steps(on_step):
    """Calls `on_step(n)` as the training loop starts its n-th step (1-based) in this process."""
    import lipkit.train.loop as loop

    original, calls = loop.train_step, [0]

    def marked(*args, **kwargs):
        calls[0] += 1
        on_step(calls[0])
        return original(*args, **kwargs)

    loop.train_step = marked
    try:
        yield
    finally:
        loop.train_step = original


def count_train_step(cfg, run_dir: Path, step: int = MEASURED_STEP) -> list[Signature]:
    """Train `cfg` into `run_dir` and return what step `step` issued, from its start to the start
    of the next one (cfg.train.steps must be larger than `step`)."""
    from lipkit.train import train

    if cfg.train.steps <= step:
        raise ValueError(f"train.steps={cfg.train.steps}: counting step {step} needs at least {step + 1}")
    counter = CollectiveCounter()

    def on_step(n: int) -> None:
        counter.recording = n == step

    with counter, _marking_steps(on_step):
        train(cfg, run_dir)
    return counter.records


def _worker(rank: int, runs: dict[int, dict[str, list[str]]], ports: dict[int, int], out_dir: str) -> None:
    """Every world size in turn, largest first, each in a fresh default process group of the
    first `world size` processes (the others are done)."""
    import torch.distributed as dist

    from lipkit.config import load_config

    torch.set_num_threads(1)
    out = Path(out_dir)
    for world_size, cases in sorted(runs.items(), reverse=True):
        if rank >= world_size:
            break
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[world_size]), RANK=str(rank),
                          WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
        here = out / f"n{world_size}"
        try:
            counted = {name: count_train_step(load_config(PRESET, [*MEASURE_BASE, *overrides]),
                                              here / f"{name}-rank{rank}")
                       for name, overrides in cases.items()}
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        (here / f"rank{rank}.json").write_text(json.dumps(counted))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(runs: dict[int, dict[str, list[str]]], out_dir: Path) -> dict[int, dict[str, list[Signature]]]:
    """{world size: {case: overrides}} -> {world size: {case: the collectives its counted step
    issued}}, on gloo processes spawned once for all world sizes. Every rank must count the same;
    rank 0's list is returned. Case NAME at world size N ran in out_dir/nN/NAME-rank0, whose
    config.yaml records what the run resolved (the tokenizer's vocabulary, the heads)."""
    import torch.multiprocessing as mp

    for world_size in runs:
        (out_dir / f"n{world_size}").mkdir(parents=True, exist_ok=True)
    ports = {world_size: free_port() for world_size in runs}
    mp.spawn(_worker, args=(runs, ports, str(out_dir)), nprocs=max(runs), join=True)
    result = {}
    for world_size, cases in runs.items():
        here = out_dir / f"n{world_size}"
        ranks = [json.loads((here / f"rank{r}.json").read_text()) for r in range(world_size)]
        for r, counted in enumerate(ranks[1:], start=1):
            for name in cases:
                if sorted(map(tuple, counted[name])) != sorted(map(tuple, ranks[0][name])):
                    raise RuntimeError(f"case {name} on {world_size} processes: rank {r} counted other collectives "
                                       "than rank 0")
        result[world_size] = {name: [tuple(s) for s in ranks[0][name]] for name in cases}
    return result


def recorded_config(out_dir: Path, world_size: int, case: str):
    """The config case `case` on `world_size` processes recorded (rank 0's run directory)."""
    from lipkit.config import load_config

    return load_config(str(out_dir / f"n{world_size}" / f"{case}-rank0" / "config.yaml"), recorded=True)
