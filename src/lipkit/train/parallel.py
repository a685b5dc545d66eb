"""The model in one or many processes: DDP or FSDP2 (`fully_shard` per block) over the towers,
gradient sync for parameters outside the wrapper, gradient clipping, and full state dicts for
checkpoints.

Only the towers are wrapped. The heads (everything `LIPModel.heads_from_features` runs:
adapters, projections, logit scale, prototype heads) stay whole in every process, and so does the
objective: their parameters get their gradient from a backward the wrapper may not see (the
feature-cache step runs the heads once on the whole batch, outside the wrapper's forward) and are
averaged over ranks by `average_gradients`, in both the plain and the feature-cache step. With no
trainable tower parameter (both towers locked) there is nothing to wrap.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from lipkit import distributed


@dataclass
class Parallel:
    model: nn.Module  # the model itself (under FSDP2 its parameters are sharded DTensors)
    train_model: nn.Module  # what the loop calls: DDP's wrapper, or the model
    strategy: str  # single | ddp | fsdp | replicated (several processes, nothing to wrap)
    # model parameters the wrapper leaves alone (the heads): the loop averages their gradients
    # itself, like the objective's
    replicated: tuple[nn.Parameter, ...] = ()

    def no_sync(self):
        """Context for micro-batches whose gradients are only accumulated, not synchronised."""
        if self.strategy == "ddp":
            return self.train_model.no_sync()
        if self.strategy == "fsdp":
            return _fsdp_no_sync(self.model)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ state for checkpoints
    def model_state(self) -> dict[str, torch.Tensor] | None:
        """Full CPU state dict on rank 0, None elsewhere (a collective under FSDP)."""
        if self.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            state = self.model.state_dict()
        if distributed.rank() != 0:
            return None
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        """Full (unsharded) weights into the model, every rank taking its part under FSDP."""
        if self.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            set_model_state_dict(self.model, state, options=StateDictOptions(full_state_dict=True))
        else:
            self.model.load_state_dict(state)

    def optimizer_state(self, optimizer: torch.optim.Optimizer, objective: nn.Module) -> dict | None:
        if self.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            state = get_optimizer_state_dict(
                _container(self.model, objective), optimizer,
                options=StateDictOptions(full_state_dict=True, cpu_offload=True),
            )
        else:
            state = optimizer.state_dict()
        return state if distributed.rank() == 0 else None

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, objective: nn.Module, state: dict) -> None:
        if self.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(
                _container(self.model, objective), optimizer, state, options=StateDictOptions(full_state_dict=True)
            )
        else:
            optimizer.load_state_dict(state)

    @property
    def optimizer_format(self) -> str:
        """Plain optimizer state dicts key parameters by position, FSDP's by name."""
        return "by-name" if self.strategy == "fsdp" else "by-position"


def _container(model: nn.Module, objective: nn.Module) -> nn.Module:
    box = nn.Module()
    box.model = model
    box.objective = objective
    return box


@contextlib.contextmanager
def _fsdp_no_sync(model: nn.Module):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules FSDP2 shards on their own: every element of every nn.ModuleList (transformer
    blocks, in our towers and in the usual pretrained ones)."""
    return [m for lst in model.modules() if isinstance(lst, nn.ModuleList) for m in lst]


def wrap_model(model: nn.Module, strategy: str, device: torch.device) -> Parallel:
    """`model` is a LIPModel: its towers are wrapped, its heads replicated (module docstring)."""
    if distributed.world_size() == 1:
        return Parallel(model, model, "single")
    if strategy not in ("ddp", "fsdp"):
        raise ValueError(f"train.strategy: expected 'ddp' or 'fsdp', got {strategy!r}")
    heads = model.head_parameters()
    replicated = tuple(p for _, p in heads)
    if not model.towers_trainable:
        return Parallel(model, model, "replicated", replicated=replicated)
    if strategy == "ddp":
        # The heads' buffers are left out too: equal on every rank by construction
        # (LIPModel.head_buffers), so DDP's per-step broadcast of them from rank 0 would move
        # bytes and a latency for nothing. Tower buffers (an EfficientNet's local BatchNorm) stay
        # in, broadcast as usual. DDP names a member of the root module ".name" in some of its
        # checks and "name" in others.
        ignored = [n for n, _ in heads] + [n for n, _ in model.head_buffers()]
        names = ignored + [f".{n}" for n in ignored if "." not in n]
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        return Parallel(model, ddp, "ddp", replicated=replicated)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (distributed.world_size(),))
    ignored = set(replicated)
    for tower in (model.vision, model.text):
        for unit in shard_units(tower):
            fully_shard(unit, mesh=mesh, ignored_params=ignored)
    fully_shard(model, mesh=mesh, ignored_params=ignored)
    return Parallel(model, model, "fsdp", replicated=replicated)


@torch.no_grad()
def clip_gradients(groups: list[list[torch.Tensor]], max_norm: float) -> torch.Tensor:
    """Scale every gradient so the global norm over all groups is at most `max_norm`; returns the
    norm before clipping. Groups may mix sharded (DTensor) and plain parameters."""
    from torch.distributed.tensor import DTensor

    norms = []
    for params in groups:
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            n = torch.nn.utils.get_total_norm(grads)
            norms.append((n.full_tensor() if isinstance(n, DTensor) else n).float().cpu())
    if not norms:
        return torch.zeros(())
    total = torch.stack(norms).norm()
    coef = max_norm / (float(total) + 1e-6)
    if coef < 1:
        for params in groups:
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(coef)
    return total
