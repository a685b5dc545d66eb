"""Process groups from torchrun's environment, and the two collectives every objective uses.

Convention: each rank computes a *local* loss whose mean over ranks is the global loss, and DDP
averages gradients over ranks. Under that convention the backward of a gather is a sum over ranks
of the incoming gradients (then this rank's slice), and the backward of a mean is a mean. With
these two functions every objective's loss and gradient equal the single-process full batch.
"""
from __future__ import annotations

import atexit
import os
import sys
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def init_from_env(backend: str | None = None) -> DistInfo:
    """Initialise the default process group when started by torchrun (WORLD_SIZE > 1)."""
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    if ws <= 1:
        return DistInfo()
    if not is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        atexit.register(_let_collectives_settle)
        warning = elastic_store_warning(os.environ)
        if warning and dist.get_rank() == 0:
            print(warning, file=sys.stderr)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available() and dist.get_backend() == "nccl":
        torch.cuda.set_device(local_rank)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def _let_collectives_settle() -> None:
    """At exit, before the interpreter shuts down. A gloo thread frees the tensors of the last
    collective (rank 1's final gather_object at a checkpoint) just after the caller saw it finish,
    and it needs the GIL for that; when the main thread holds the GIL until Python is finalizing,
    that thread is killed mid-destructor and the process aborts ("terminate called without an
    active exception", SIGABRT), after a complete run, which torchrun reports as a failed worker
    (seen with torch 2.13). Pausing lets that thread finish; unlike destroy_process_group it waits
    for no peer, so it cannot hang a process whose other ranks are gone."""
    time.sleep(0.05)


def elastic_store_warning(env) -> str | None:
    """A warning for `torchrun --max-restarts` with the rendezvous' shared TCP store (torch's
    default since 2.5): the store outlives a restart with the old group's addresses in it, so a
    restarted group often fails to connect and uses up more restarts (pytorch/pytorch#135712; seen
    with torch 2.13 in tests/test_multinode.py's set-up). With sharing off, each group gets a fresh store."""
    if int(env.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0 and env.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return ("lipkit: warning: torchrun --max-restarts with its shared rendezvous store: a restarted group may "
                "connect to addresses of the group before it and use up its restarts (pytorch/pytorch#135712); set "
                "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in torchrun's environment (docs/guides/multi-node.md)")
    return None


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ws = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(ws)]
        dist.all_gather(parts, x.contiguous())
        ctx.local_size = x.shape[0]
        ctx.rank = dist.get_rank()
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.local_size
        return grad[start : start + ctx.local_size]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (equal first dimension on every rank) from all ranks along dim 0, rank
    order; gradients flow back to every rank's own slice. Identity in one process."""
    if world_size() == 1:
        return x
    sizes = torch.tensor([x.shape[0]], device=x.device)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world_size())]
    dist.all_gather(all_sizes, sizes)
    if any(int(s) != x.shape[0] for s in all_sizes):
        raise ValueError(
            f"all_gather_with_grad needs the same local batch on every rank, got {[int(s) for s in all_sizes]}"
        )
    return _AllGatherWithGrad.apply(x)


class _AllReduceMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / dist.get_world_size()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad / dist.get_world_size()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over ranks, differentiable (a batch statistic such as nCLIP's mean
    prediction). Identity in one process."""
    if world_size() == 1:
        return x
    return _AllReduceMean.apply(x)


@torch.no_grad()
def all_reduce_sum_nograd(x: torch.Tensor) -> torch.Tensor:
    """Sum over ranks without gradient (counts, diagnostics)."""
    if world_size() == 1:
        return x
    out = x.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def global_row_offset(local_size: int) -> int:
    """Index of this rank's first row in the gathered (rank-ordered) batch."""
    return rank() * local_size


# --------------------------------------------------------------------------- trainer helpers
@torch.no_grad()
def all_reduce_max_flags(*flags: float, device: torch.device | str = "cpu") -> list[float]:
    """Element-wise max over ranks of a few scalars (stop requested, save due, ...): every rank
    takes the same decision."""
    if world_size() == 1:
        return [float(f) for f in flags]
    t = torch.tensor([float(f) for f in flags], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


@torch.no_grad()
def all_finite(x: torch.Tensor) -> bool:
    """True when `x` is finite on every rank (decided before backward, so DDP never hangs)."""
    ok = torch.isfinite(x.detach()).all().to(torch.float64).reshape(1)
    if world_size() > 1:
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item())


@torch.no_grad()
def average_gradients(params: list[torch.Tensor]) -> None:
    """Mean of the gradients of parameters that live outside the DDP/FSDP-wrapped model (the
    replicated heads, an objective's own parameters), in one collective. A gradient missing on
    some ranks counts as zero there; one missing on every rank stays missing (None), as in one
    process, so that AdamW leaves that parameter alone (no weight decay either)."""
    if world_size() == 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    has_grad = torch.tensor([float(p.grad is not None) for p in params], dtype=torch.float64, device=grads[0].device)
    flat = torch.cat([g.reshape(-1).to(torch.float64) for g in grads] + [has_grad])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    anywhere = flat[-len(params):] > 0
    offset = 0
    for p, g, used in zip(params, grads, anywhere.tolist()):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g).to(g.dtype) if used else None
        offset += n


def pool_over_ranks(items: list, count: int, device: torch.device | str = "cpu") -> tuple[list, int]:
    """(every rank's `items`, in rank order; the sum of every rank's `count`): one all-reduce,
    and an all-gather of the items only when some rank has any. Every rank must call it."""
    if world_size() == 1:
        return list(items), count
    sizes = torch.tensor([float(len(items)), float(count)], dtype=torch.float64, device=device)
    dist.all_reduce(sizes, op=dist.ReduceOp.SUM)
    n_items, total = sizes.tolist()
    if not n_items:
        return [], int(total)
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, list(items))
    return [item for part in gathered for item in part], int(total)


def gather_to_main(obj):
    """A list of every rank's `obj` on rank 0 (None elsewhere); `[obj]` in one process."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size() if rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
