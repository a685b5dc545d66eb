"""LoRA (Hu et al. 2021): low-rank adapters on a tower's linear projections, with every base weight
frozen (model.lora, lipkit.config.LoraConfig).

A target layer y = W x + b becomes y = W x + b + (alpha / r) B A dropout(x), A [r, in] drawn as a
Linear's weight is, B [out, r] zero: the model starts as the base model, output for output. The
layer keeps its `weight` and `bias` under their names, so a base model's weights load into a LoRA
model as they are (train --init); the adapters are `lora_a` and `lora_b` beside them. Dropout is
torch's, so it draws from the run's random stream (checkpointed, replayed by feature-cache
accumulation).

Folding (`fold_lora_state`, `merged_model`) gives W + (alpha / r) B A, summed in float64 and
rounded once: a plain model whose outputs equal the adapter model's to rounding.

Which layers a tower offers is its own `projections()` (lipkit.models.towers); a tower without the
named kind (a conv tower asked for attention) is a one-line ConfigError naming both."""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from lipkit.config import LORA_HEADS, ConfigError, LoraConfig

LORA_NAMES = ("lora_a", "lora_b")
# LoraTargetsConfig field -> (the LIPModel attribute holding that tower, its config key)
TOWERS = {"image": ("vision", "model.vision.name"), "text": ("text", "model.text.name")}
# LoraConfig.train_heads -> the LIPModel parameter names they cover (by prefix)
HEAD_PARAMETERS = {"projections": ("image_projection.", "text_projection."), "logit_scale": ("log_logit_scale",),
                   "prototypes": ("image_prototypes.", "text_prototypes."), "ssl": ("image_ssl.",),
                   "adapters": ("image_adapter.", "text_adapter.")}
assert tuple(HEAD_PARAMETERS) == LORA_HEADS


def is_lora_key(key: str) -> bool:
    """A state-dict key of an adapter matrix."""
    return key.rpartition(".")[2] in LORA_NAMES


class LoraLinear(nn.Linear):
    """`base` (its own weight and bias Parameters, frozen) plus the low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        like = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, **like))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, **like))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear draws its weight
        self.rank, self.scale = rank, alpha / rank
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _hidden(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.lora_dropout(x), self.lora_a) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + F.linear(self._hidden(x), self.lora_b)

    def output_slice(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Output features start:stop only (lipkit.models.transformer.output_slice)."""
        bias = None if self.bias is None else self.bias[start:stop]
        return F.linear(x, self.weight[start:stop], bias) + F.linear(self._hidden(x), self.lora_b[start:stop])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, scale={self.scale:g}"


def fold(weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scale: float) -> torch.Tensor:
    """W + scale B A, summed in float64 and rounded once to W's dtype."""
    return (weight.double() + scale * (lora_b.double() @ lora_a.double())).to(weight.dtype)


def apply_lora(model: nn.Module, cfg: LoraConfig) -> list[nn.Module]:
    """Adapters on the target projections of `model`'s towers (a LIPModel: `vision`, `text`, its
    heads by HEAD_PARAMETERS); every other parameter frozen but the heads in `cfg.train_heads`.
    Returns the modules that must stay in eval mode (norm statistics, dropout): the towers
    without a target and the frozen heads."""
    for p in model.parameters():
        p.requires_grad_(False)
    frozen = []
    for field_name, (attr, key) in TOWERS.items():
        tower = getattr(model, attr)
        kinds = list(dict.fromkeys(getattr(cfg.targets, field_name)))
        if not kinds:
            frozen.append(tower)
            continue
        offered = tower.projections() if hasattr(tower, "projections") else {}
        for kind in kinds:
            names = offered.get(kind, [])
            if not names:
                raise ConfigError(f"model.lora.targets.{field_name}: the {field_name} tower ({key}="
                                  f"{getattr(model.cfg, attr).name}) has no {kind} projections for LoRA to adapt")
            for name in names:
                parent_name, _, child = name.rpartition(".")
                parent = tower.get_submodule(parent_name)
                setattr(parent, child, LoraLinear(getattr(parent, child), cfg.rank, cfg.alpha, cfg.dropout))
    trained = tuple(prefix for head in cfg.train_heads for prefix in HEAD_PARAMETERS[head])
    for name, p in model.named_parameters():
        if name.startswith(trained):
            p.requires_grad_(True)
    for prefixes in HEAD_PARAMETERS.values():
        for prefix in prefixes:
            head = getattr(model, prefix.rstrip("."), None)
            if isinstance(head, nn.Module) and not prefix.startswith(trained):
                frozen.append(head)
    return frozen


def fold_lora_state(state: dict[str, torch.Tensor], cfg: LoraConfig) -> dict[str, torch.Tensor]:
    """The state dict of the plain model: every adapted `X.weight` replaced by its fold, the
    `X.lora_a` / `X.lora_b` keys gone."""
    scale = cfg.alpha / cfg.rank
    out = {k: v for k, v in state.items() if not is_lora_key(k)}
    for key, lora_a in state.items():
        layer, dot, name = key.rpartition(".")
        if name == "lora_a":
            weight = f"{layer}{dot}weight"
            out[weight] = fold(state[weight], lora_a, state[f"{layer}{dot}lora_b"], scale)
    return out


def without_lora(cfg):
    """A copy of ModelConfig `cfg` with LoRA off (the config of its merged model)."""
    return dataclasses.replace(cfg, lora=LoraConfig())


def merged_model(model: nn.Module) -> nn.Module:
    """A plain model of `model`'s class (a LIPModel built with model.lora), with every adapter
    folded into its base weight; on the same device and dtype, in the same mode. The global
    random stream is left as it was."""
    if not model.cfg.lora.enabled:
        return model
    like = next(model.parameters())
    with torch.random.fork_rng(devices=[]):
        plain = type(model)(without_lora(model.cfg))
    plain = plain.to(like.device, like.dtype)
    plain.load_state_dict(fold_lora_state(model.state_dict(), model.cfg.lora))
    return plain.train(model.training)
