"""Heads on top of the pooled tower features: CLIP linear projection and nCLIP prototype head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lipkit.config import PrototypeHeadConfig, SslHeadConfig
from lipkit.models.batch_norm import GlobalBatchNorm1d


class PrototypeHead(nn.Module):
    """MLP (hidden, [BatchNorm,] GELU) -> bottleneck -> L2-normalise -> weight-normalised linear
    to K, no bias.

    The prototype weights are normalised row-wise on every forward (weight norm with the gain
    fixed at 1, as DINO's last layer), so the logits are cosines in [-1, 1]; the objective applies
    its temperature. With `batch_norm` (as SwAV's and BYOL's heads) the hidden layer is normalised
    over the global batch; its outputs then depend on the whole batch in training."""

    def __init__(self, in_dim: int, cfg: PrototypeHeadConfig):
        super().__init__()
        # BatchNorm subtracts the batch mean, so a bias before it would do nothing but drift
        norm = [GlobalBatchNorm1d(cfg.hidden_dim)] if cfg.batch_norm else []
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, cfg.hidden_dim, bias=not cfg.batch_norm), *norm, nn.GELU(),
            nn.Linear(cfg.hidden_dim, cfg.bottleneck_dim),
        )
        self.prototypes = nn.Parameter(torch.empty(cfg.num_prototypes, cfg.bottleneck_dim))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(features), dim=-1)
        return F.linear(z, F.normalize(self.prototypes, dim=-1))


class SslProjector(nn.Sequential):
    """SLIP's image projector for SimCLR: `layers` linear layers with BatchNorm over the global
    batch (lipkit.models.batch_norm; SLIP's SyncBatchNorm) and ReLU between them."""

    def __init__(self, in_dim: int, cfg: SslHeadConfig):
        dims = [in_dim] + [cfg.hidden_dim] * (cfg.layers - 1) + [cfg.out_dim]
        parts: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            parts.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                parts += [GlobalBatchNorm1d(b), nn.ReLU(inplace=True)]
        super().__init__(*parts)


class ResidualAdapter(nn.Sequential):
    """`layers` pre-norm residual MLP blocks (width -> width -> width, GELU) on pooled features.
    Each block's output layer starts at zero, so an adapter starts as the identity."""

    def __init__(self, width: int, layers: int):
        super().__init__(*(_AdapterBlock(width) for _ in range(layers)))


class _AdapterBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc_in = nn.Linear(width, width)
        self.fc_out = nn.Linear(width, width)
        nn.init.trunc_normal_(self.fc_in.weight, std=width**-0.5)
        nn.init.zeros_(self.fc_in.bias)
        nn.init.zeros_(self.fc_out.weight)
        nn.init.zeros_(self.fc_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc_out(F.gelu(self.fc_in(self.norm(x))))
