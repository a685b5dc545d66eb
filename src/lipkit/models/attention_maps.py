"""Where a ViT image tower looks: its class token's attention over the patches, read exactly.

`cls_attention(tower, images)` runs the tower as its forward does (patchify, cls token,
positions, blocks) and, in the last block, computes the class token's attention explicitly,
softmax(q_cls · Kᵀ / √d) per head, instead of through F.scaled_dot_product_attention, which does
not return its weights. It also finishes the block with those weights (attention · V, the output
projection, the MLP, the final norm), so the pooled features it returns are the tower's own
output: the weights are the ones the fused path applies, not a re-derivation of them.

`rollout=True` adds attention rollout (Abnar & Zuidema 2020): each block's head-averaged
attention A, mixed with the residual as ½A + ½I and its rows renormalised, multiplied from the
first block to the last; the class token's row over the patches is the map.

Maps are [B, heads, patches] (rollout: [B, patches]); patch p sits at row p // grid, column
p % grid of the image (`tower.grid`). Only towers with `tokens` and transformer blocks of fused
qkv attention (lipkit's ViT) have maps: `has_attention(tower)` says whether this one does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lipkit.models.transformer import Block
from lipkit.models.vision import VisionTransformer


@dataclass
class ClsAttention:
    heads: torch.Tensor  # [B, H, patches]: the last block's cls -> patch attention per head
    pooled: torch.Tensor  # [B, W]: the tower's output, computed with those weights
    rollout: torch.Tensor | None = None  # [B, patches]: attention rollout's cls -> patch row
    grid: int = 0  # patches per side

    @property
    def mean(self) -> torch.Tensor:
        """[B, patches]: the heads' average."""
        return self.heads.mean(dim=1)


def has_attention(tower: nn.Module) -> bool:
    return isinstance(tower, VisionTransformer) and len(tower.transformer.blocks) > 0


def _qkv(block: Block, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v [B, H, T, d] of the block's attention on its input x [B, T, W]."""
    b, t, w = x.shape
    heads = block.attn.heads
    qkv = block.attn.qkv(block.norm1(x)).view(b, t, 3, heads, w // heads).permute(2, 0, 3, 1, 4)
    return qkv.unbind(0)


def attention_probabilities(block: Block, x: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
    """softmax(q Kᵀ / √d) [B, H, len(rows), T] of the block's attention on x [B, T, W], for the
    query positions `rows` (default: all)."""
    q, k, _ = _qkv(block, x)
    scale = q.shape[-1] ** -0.5
    return torch.softmax((q[:, :, rows] @ k.transpose(-2, -1)) * scale, dim=-1)


def _finish_cls(block: Block, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """The block's output at the cls position [B, W], given its cls attention probs [B, H, 1, T]."""
    _, _, v = _qkv(block, x)
    b, _, w = x.shape
    mixed = (probs @ v).reshape(b, w)  # heads concatenated, as the fused path's output
    y = x[:, 0] + block.drop(block.attn.proj(mixed))
    return y + block.drop(block.mlp(block.norm2(y)))


def _rollout_step(probs: torch.Tensor) -> torch.Tensor:
    """½·(head-averaged attention) + ½·I with rows summing to one: [B, T, T]."""
    a = probs.mean(dim=1)
    a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return a / a.sum(dim=-1, keepdim=True)


@torch.no_grad()
def cls_attention(tower: nn.Module, images: torch.Tensor, rollout: bool = False) -> ClsAttention:
    """The class token's attention of `tower` (a ViT in eval mode) on model-ready `images`."""
    if not has_attention(tower):
        raise ValueError(f"{type(tower).__name__} has no transformer attention to read")
    if tower.training and tower.cfg.patch_dropout > 0:
        raise ValueError("attention maps need every patch: put the tower in eval mode (patch dropout)")
    x = tower.tokens(images)
    blocks = tower.transformer.blocks
    flow = None
    for block in blocks[:-1]:
        if rollout:
            step = _rollout_step(attention_probabilities(block, x))
            flow = step if flow is None else step @ flow
        x = block(x)
    last = blocks[-1]
    cls_probs = attention_probabilities(last, x, slice(0, 1))  # [B, H, 1, T]
    pooled = tower.norm_post(_finish_cls(last, x, cls_probs))
    rolled = None
    if rollout:
        step_cls = _rollout_step(attention_probabilities(last, x))[:, :1]  # [B, 1, T]
        rolled = (step_cls if flow is None else step_cls @ flow)[:, 0, 1:]
    return ClsAttention(cls_probs[:, :, 0, 1:], pooled, rolled, tower.grid)
