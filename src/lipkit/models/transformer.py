"""Pre-norm transformer block shared by both towers: fused qkv, F.scaled_dot_product_attention.

A tower that reads one position of the last block's output (the cls token, the EOS token) passes
`rows` (that position per sample): the last block then computes keys and values for every
position but queries, attention output and MLP for that row only, the same numbers as the full
block at about 1/6 of its cost on long sequences."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=causal and attn_mask is None,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.proj(out.transpose(1, 2).reshape(b, n, w))

    def forward_rows(self, x: torch.Tensor, rows: torch.Tensor, attn_mask: torch.Tensor | None = None,
                     causal: bool = False) -> torch.Tensor:
        """Attention output [B, W] at position rows[i] of each sample i (keys: every position)."""
        b, n, w = x.shape
        d = w // self.heads
        q = output_slice(self.qkv, x[torch.arange(b, device=x.device), rows], 0, w)
        k, v = output_slice(self.qkv, x, w, 3 * w).view(b, n, 2, self.heads, d).permute(2, 0, 3, 1, 4).unbind(0)
        if causal:  # the row sees the keys up to itself
            visible = (torch.arange(n, device=x.device) <= rows[:, None])[:, None, None, :]
            attn_mask = visible if attn_mask is None else attn_mask & visible
        out = F.scaled_dot_product_attention(
            q.view(b, 1, self.heads, d).transpose(1, 2), k, v, attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.proj(out.reshape(b, w))


def output_slice(linear: nn.Linear, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Output features start:stop of `linear` at `x`, computing only those (a LoRA layer,
    lipkit.models.lora, adds its update to them)."""
    part = getattr(linear, "output_slice", None)
    if part is not None:
        return part(x, start, stop)
    return F.linear(x, linear.weight[start:stop], None if linear.bias is None else linear.bias[start:stop])


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation OpenAI's CLIP models were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"gelu": nn.GELU, "quick_gelu": QuickGELU}


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 activation: str = "gelu"):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), ACTIVATIONS[activation](), nn.Linear(hidden, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, causal: bool = False,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        """[B, N, W] -> [B, N, W]; with `rows` ([B] positions), only those rows: [B, W]."""
        if rows is None:
            x = x + self.drop(self.attn(self.norm1(x), attn_mask, causal))
            return x + self.drop(self.mlp(self.norm2(x)))
        y = x[torch.arange(x.shape[0], device=x.device), rows]
        y = y + self.drop(self.attn.forward_rows(self.norm1(x), rows, attn_mask, causal))
        return y + self.drop(self.mlp(self.norm2(y)))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 activation: str = "gelu"):
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout, activation) for _ in range(layers))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, causal: bool = False,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        """[B, N, W] -> [B, N, W]; with `rows`, the last block's output at those rows: [B, W]."""
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            # Through __call__ (not a separate method), so FSDP's and DDP's module hooks run.
            x = block(x, attn_mask, causal, rows if i == last else None)
        return x

    def projections(self) -> dict[str, list[str]]:
        """The linear layers LoRA can adapt (lipkit.models.lora), by kind; names within this module."""
        blocks = range(len(self.blocks))
        return {"attention": [f"blocks.{i}.attn.{n}" for i in blocks for n in ("qkv", "proj")],
                "mlp": [f"blocks.{i}.mlp.{j}" for i in blocks for j in (0, 2)]}


def init_transformer_(module: nn.Module, std: float = 0.02) -> None:
    """Truncated-normal linear weights, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
