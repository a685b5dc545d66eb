"""The lab's two encoders: linear or one-hidden-layer maps to R^d, L2-normalised. Their forward
returns the same keys as LIPModel's CLIP head, so every lipkit objective trains them unchanged."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lipkit.theory.config import SyntheticEncoderConfig


def _encoder(in_dim: int, cfg: SyntheticEncoderConfig) -> nn.Module:
    if cfg.kind == "linear":
        return nn.Linear(in_dim, cfg.embed_dim, bias=False)
    return nn.Sequential(nn.Linear(in_dim, cfg.hidden_dim), nn.ReLU(), nn.Linear(cfg.hidden_dim, cfg.embed_dim))


class SyntheticEncoders(nn.Module):
    def __init__(self, image_dim: int, text_dim: int, cfg: SyntheticEncoderConfig):
        super().__init__()
        self.image = _encoder(image_dim, cfg)
        self.text = _encoder(text_dim, cfg)
        # Stored as a log like LIPModel's; fixed unless encoder.learn_temperature.
        self.log_logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / cfg.temperature)), requires_grad=cfg.learn_temperature
        )

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(x), dim=-1)

    def encode_text(self, y: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(y), dim=-1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        image_features, text_features = self.image(x), self.text(y)
        return {
            "image_features": image_features,
            "text_features": text_features,
            "image_embeds": F.normalize(image_features, dim=-1),
            "text_embeds": F.normalize(text_features, dim=-1),
            "logit_scale": self.log_logit_scale.exp(),
        }
