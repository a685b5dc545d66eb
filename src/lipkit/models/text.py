"""Text transformer: causal (pooled at the EOS token) or bidirectional (mean over tokens).

Token id 0 is padding (right-padded); the EOS token is the last non-padding position, or with
`pooling: argmax` the position of the highest id (OpenAI CLIP's vocabulary, where id 0 is "!")."""
from __future__ import annotations

import torch
from torch import nn

from lipkit.config import TextConfig
from lipkit.models.transformer import Transformer, init_transformer_

PAD_ID = 0


class TextTransformer(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.width = cfg.width
        self.token_embed = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, cfg.dropout, cfg.activation)
        self.norm_final = nn.LayerNorm(cfg.width)
        init_transformer_(self)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)

    def projections(self) -> dict[str, list[str]]:
        """The linear layers LoRA can adapt, by kind (lipkit.models.towers)."""
        return {kind: [f"transformer.{n}" for n in names] for kind, names in self.transformer.projections().items()}

    def lock_groups(self) -> list[list]:
        """Embeddings, each block, final norm."""
        return [[self.token_embed, self.pos_embed], *[[b] for b in self.transformer.blocks], [self.norm_final]]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] > self.cfg.context_length:
            raise ValueError(
                f"text tower expects tokens of shape [B, L<={self.cfg.context_length}], got {list(tokens.shape)}"
            )
        valid = tokens != PAD_ID
        # Columns that are padding in every row change nothing (causal: they follow every EOS;
        # bidirectional: they are masked out), so drop them: short captions cost less.
        n = max(1, int(valid.any(0).nonzero().max()) + 1) if valid.any() else 1
        tokens, valid = tokens[:, :n], valid[:, :n]
        x = self.token_embed(tokens) + self.pos_embed[:, :n]
        # Right padding comes after EOS, so with a causal mask alone it never reaches the EOS token.
        key_mask = None if self.cfg.causal else valid[:, None, None, :]  # [B,1,1,L]: real tokens only
        if self.cfg.pooling in ("eos", "argmax"):
            last = tokens.argmax(1) if self.cfg.pooling == "argmax" else valid.long().sum(1).clamp(min=1) - 1
            if not len(self.transformer.blocks):
                return self.norm_final(x[torch.arange(x.shape[0], device=x.device), last])
            # Only the EOS row of the last block is read: compute just that row there.
            return self.norm_final(self.transformer(x, attn_mask=key_mask, causal=self.cfg.causal, rows=last))
        x = self.norm_final(self.transformer(x, attn_mask=key_mask, causal=self.cfg.causal))
        w = valid.to(x.dtype).unsqueeze(-1)
        return (x * w).sum(1) / w.sum(1).clamp(min=1)
