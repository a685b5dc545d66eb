"""ViT image tower: patchify, cls token, learned positions, pre-norm blocks, pooled cls."""
from __future__ import annotations

import torch
from torch import nn

from lipkit.config import VisionConfig
from lipkit.models.transformer import Transformer, init_transformer_


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        if not 0 <= cfg.patch_dropout < 1:
            raise ValueError(f"model.vision.patch_dropout must be in [0, 1), got {cfg.patch_dropout}")
        if cfg.image_size % cfg.patch_size:
            raise ValueError(
                f"model.vision.image_size {cfg.image_size} is not divisible by patch_size {cfg.patch_size}"
            )
        self.cfg = cfg
        self.width = cfg.width
        grid = cfg.image_size // cfg.patch_size
        self.patchify = nn.Conv2d(cfg.channels, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, cfg.width))
        self.norm_pre = nn.LayerNorm(cfg.width)
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, cfg.dropout, cfg.activation)
        self.norm_post = nn.LayerNorm(cfg.width)
        init_transformer_(self)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def projections(self) -> dict[str, list[str]]:
        """The linear layers LoRA can adapt, by kind (lipkit.models.towers)."""
        return {kind: [f"transformer.{n}" for n in names] for kind, names in self.transformer.projections().items()}

    def lock_groups(self) -> list[list]:
        """Embedding (patchify, cls, positions, pre-norm), each block, final norm."""
        return [[self.patchify, self.cls_token, self.pos_embed, self.norm_pre], *[[b] for b in self.transformer.blocks],
                [self.norm_post]]

    @property
    def grid(self) -> int:
        """Patches per side: the patch tokens are a grid x grid raster, row by row."""
        return self.cfg.image_size // self.cfg.patch_size

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The first block's input [B, 1 + patches, W]: the cls token, then the patches."""
        c, s = self.cfg.channels, self.cfg.image_size
        if images.ndim != 4 or images.shape[1:] != (c, s, s):
            raise ValueError(f"image tower expects images of shape [B, {c}, {s}, {s}], got {list(images.shape)}")
        x = self.patchify(images).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
        if self.training and self.cfg.patch_dropout > 0:
            x = self._drop_patches(x)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return self.norm_pre(torch.cat([cls, x], dim=1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.tokens(images)
        if not len(self.transformer.blocks):
            return self.norm_post(x[:, 0])
        # Only the cls row of the last block is read: compute just that row there.
        cls_rows = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.norm_post(self.transformer(x, rows=cls_rows))

    def _drop_patches(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        keep = max(1, round(n * (1 - self.cfg.patch_dropout)))
        kept = torch.rand(b, n, device=x.device).argsort(dim=1)[:, :keep]
        return x.gather(1, kept.unsqueeze(-1).expand(-1, -1, w))
