"""LIPModel: image and text towers, CLIP projections, nCLIP prototype heads, logit scale."""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lipkit.config import ModelConfig
from lipkit.models.heads import PrototypeHead
from lipkit.models.towers import build_text_tower, build_vision_tower

HEADS = ("clip", "prototypes")


class LIPModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        heads = set(cfg.heads or HEADS)
        unknown = heads - set(HEADS)
        if unknown:
            raise ValueError(f"model.heads: unknown head(s) {sorted(unknown)}; allowed: {', '.join(HEADS)}")
        self.cfg = cfg
        self.heads = frozenset(heads)
        self.vision = build_vision_tower(cfg.vision)
        self.text = build_text_tower(cfg.text)
        if "clip" in heads:
            self.image_projection = nn.Linear(self.vision.width, cfg.embed_dim, bias=False)
            self.text_projection = nn.Linear(self.text.width, cfg.embed_dim, bias=False)
            nn.init.normal_(self.image_projection.weight, std=self.vision.width**-0.5)
            nn.init.normal_(self.text_projection.weight, std=self.text.width**-0.5)
            self.log_logit_scale = nn.Parameter(torch.tensor(math.log(cfg.init_logit_scale)))
        if "prototypes" in heads:
            self.image_prototypes = PrototypeHead(self.vision.width, cfg.prototypes)
            self.text_prototypes = PrototypeHead(self.text.width, cfg.prototypes)

    # ------------------------------------------------------------------ forward
    def forward(
        self, images: torch.Tensor, tokens: torch.Tensor, heads: Iterable[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Tower features plus the requested heads (default: every head the model has)."""
        heads = self.heads if heads is None else frozenset(heads)
        missing = heads - self.heads
        if missing:
            raise ValueError(f"model has no head(s) {sorted(missing)}; built with {sorted(self.heads)}")
        if images.shape[0] != tokens.shape[0]:
            raise ValueError(f"batch mismatch: {images.shape[0]} images vs {tokens.shape[0]} captions")
        image_features = self.vision(images)
        text_features = self.text(tokens)
        return self.heads_from_features(image_features, text_features, heads)

    def heads_from_features(
        self, image_features: torch.Tensor, text_features: torch.Tensor, heads: Iterable[str]
    ) -> dict[str, torch.Tensor]:
        out = {"image_features": image_features, "text_features": text_features}
        if "clip" in heads:
            out["image_embeds"] = F.normalize(self.image_projection(image_features), dim=-1)
            out["text_embeds"] = F.normalize(self.text_projection(text_features), dim=-1)
            out["logit_scale"] = self.log_logit_scale.exp()
        if "prototypes" in heads:
            out["image_protos"] = self.image_prototypes(image_features)
            out["text_protos"] = self.text_prototypes(text_features)
        return out

    # ------------------------------------------------------------------ encoders (eval contract)
    # A model without CLIP projections (nCLIP alone) embeds in prototype space: its K logits are
    # the only space its objective aligns across the two modalities.
    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        f = self.vision(images)
        x = self.image_projection(f) if "clip" in self.heads else self.image_prototypes(f)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        f = self.text(tokens)
        x = self.text_projection(f) if "clip" in self.heads else self.text_prototypes(f)
        return F.normalize(x, dim=-1) if normalize else x

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        if "clip" in self.heads:
            self.log_logit_scale.clamp_(max=math.log(self.cfg.max_logit_scale))

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, run_dir: str | Path) -> None:
        from lipkit.checkpoint import save_model

        save_model(self, Path(run_dir))

    @classmethod
    def from_pretrained(cls, run_dir: str | Path) -> "LIPModel":
        from lipkit.checkpoint import load_model

        return load_model(Path(run_dir))
