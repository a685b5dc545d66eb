"""LIPModel: image and text towers, CLIP projections, nCLIP prototype heads, logit scale."""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lipkit.config import ConfigError, ModelConfig
from lipkit.errors import LipkitError
from lipkit.models.heads import PrototypeHead, ResidualAdapter, SslProjector
from lipkit.models.lora import apply_lora
from lipkit.models.towers import build_text_tower, build_vision_tower

HEADS = ("clip", "prototypes", "ssl")
DEFAULT_HEADS = ("clip", "prototypes")  # what a config without model.heads builds


def lock_tower(tower: nn.Module, unlocked: int, key: str) -> list[nn.Module]:
    """Freeze `tower` except its last `unlocked` lock groups (LiT); returns the frozen modules,
    which must also stay in eval mode (batch-norm statistics, dropout)."""
    groups = tower.lock_groups()
    if not 0 <= unlocked <= len(groups):
        raise ConfigError(f"model.{key}_unlocked_blocks: must be between 0 and {len(groups)} for this tower, got {unlocked}")
    for p in tower.parameters():
        p.requires_grad_(False)
    for group in groups[len(groups) - unlocked:]:
        for part in group:
            for p in part.parameters() if isinstance(part, nn.Module) else [part]:
                p.requires_grad_(True)
    if unlocked == 0:
        return [tower]
    return [m for group in groups[: len(groups) - unlocked] for m in group if isinstance(m, nn.Module)]


class LIPModel(nn.Module):
    """An image tower and a text tower, each with an optional residual adapter, and the heads
    `cfg.heads` names: CLIP projections and a learnable logit scale ("clip"), nCLIP prototype heads
    ("prototypes"), SLIP's image projector ("ssl"); LoRA adapters on the towers with `cfg.lora`.
    Build a fresh one from a ModelConfig, or get a trained one from `lipkit.load`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        heads = set(cfg.heads or DEFAULT_HEADS)
        unknown = heads - set(HEADS)
        if unknown:
            raise ValueError(f"model.heads: unknown head(s) {sorted(unknown)}; allowed: {', '.join(HEADS)}")
        self.cfg = cfg
        self.heads = frozenset(heads)
        self.vision = build_vision_tower(cfg.vision)
        self.text = build_text_tower(cfg.text)
        self._frozen: list[nn.Module] = []  # locked tower parts, kept in eval mode
        self.image_locked = cfg.lock_image and cfg.lock_image_unlocked_blocks == 0
        self.text_locked = cfg.lock_text and cfg.lock_text_unlocked_blocks == 0
        if cfg.lock_image:
            self._frozen += lock_tower(self.vision, cfg.lock_image_unlocked_blocks, "lock_image")
        if cfg.lock_text:
            self._frozen += lock_tower(self.text, cfg.lock_text_unlocked_blocks, "lock_text")
        if cfg.adapter_layers < 0:
            raise ConfigError(f"model.adapter_layers: must be >= 0, got {cfg.adapter_layers}")
        self.image_adapter = ResidualAdapter(self.vision.width, cfg.adapter_layers)
        self.text_adapter = ResidualAdapter(self.text.width, cfg.adapter_layers)
        if "clip" in heads:
            self.image_projection = nn.Linear(self.vision.width, cfg.embed_dim, bias=False)
            self.text_projection = nn.Linear(self.text.width, cfg.embed_dim, bias=False)
            nn.init.normal_(self.image_projection.weight, std=self.vision.width**-0.5)
            nn.init.normal_(self.text_projection.weight, std=self.text.width**-0.5)
            log_scale = torch.tensor(math.log(cfg.init_logit_scale))
            if cfg.learn_logit_scale:
                self.log_logit_scale = nn.Parameter(log_scale)
            else:  # a buffer: same state-dict key, never in the optimizer
                self.register_buffer("log_logit_scale", log_scale)
        if "prototypes" in heads:
            if cfg.prototypes.freeze_steps < 0:
                raise ConfigError(f"model.prototypes.freeze_steps: must be >= 0, got {cfg.prototypes.freeze_steps}")
            self.image_prototypes = PrototypeHead(self.vision.width, cfg.prototypes)
            self.text_prototypes = PrototypeHead(self.text.width, cfg.prototypes)
        if "ssl" in heads:
            if cfg.ssl.layers < 1 or cfg.ssl.hidden_dim < 1 or cfg.ssl.out_dim < 1:
                raise ConfigError(f"model.ssl: layers, hidden_dim and out_dim must be >= 1, got {cfg.ssl}")
            self.image_ssl = SslProjector(self.vision.width, cfg.ssl)
        if cfg.lora.enabled:  # last: every base weight is drawn as in the model without LoRA
            self._frozen += apply_lora(self, cfg.lora)
            # a tower without adapters is wholly frozen: its features can be cached and memoized
            self.image_locked = not cfg.lora.targets.image
            self.text_locked = not cfg.lora.targets.text

    def train(self, mode: bool = True) -> "LIPModel":
        super().train(mode)
        for m in self._frozen:
            m.train(False)
        return self

    @property
    def towers_frozen(self) -> bool:
        """Both towers fully locked: their features never change, so they can be cached."""
        return self.image_locked and self.text_locked

    # ------------------------------------------------------------------ forward
    def forward(
        self, images: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
        heads: Iterable[str] | None = None, *, image_features: torch.Tensor | None = None,
        text_features: torch.Tensor | None = None, towers_only: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Tower features plus the requested heads (default: every head the model has).
        `image_features` / `text_features`: a tower's pooled features computed before (frozen
        towers, lipkit.data.feature_cache), given in place of `images` / `tokens`, e.g.
        `model(image_features=f, text_features=g)`; going through forward keeps DDP's gradient
        hooks. `towers_only`: just the towers' pooled features (what `heads_from_features` takes)."""
        heads = self.heads if heads is None else frozenset(heads)
        missing = heads - self.heads
        if missing:
            raise ValueError(f"model has no head(s) {sorted(missing)}; built with {sorted(self.heads)}")
        if image_features is None:
            image_features = self._vision_views(images)
        if text_features is None:
            text_features = self.text(tokens)
        if image_features.shape[0] != text_features.shape[0]:
            raise ValueError(f"batch mismatch: {image_features.shape[0]} images vs {text_features.shape[0]} captions")
        if towers_only:
            return {"image_features": image_features, "text_features": text_features}
        return self.heads_from_features(image_features, text_features, heads)

    def _vision_views(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features [B, width], or [B, V, width] for images [B, V, C, H, W] (V views of
        each image, data.image_views), the views run through the tower as one batch."""
        if images.ndim != 5:
            return self.vision(images)
        b, v = images.shape[:2]
        return self.vision(images.flatten(0, 1)).unflatten(0, (b, v))

    # Everything after the towers (adapters, projections, logit scale, prototype heads) is small
    # and may depend on the whole batch (the prototype heads' BatchNorm): the trainer keeps these
    # parameters whole in every process and runs them once per step on the whole batch.
    TOWERS = ("vision", "text")

    def head_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of everything `heads_from_features` runs."""
        return [(n, p) for n, p in self.named_parameters() if n.split(".", 1)[0] not in self.TOWERS]

    def head_buffers(self) -> list[tuple[str, torch.Tensor]]:
        """(name, buffer) of the heads: the global-batch BatchNorm's running statistics, which every
        process updates from the same all-reduced batch statistics, and a fixed logit scale. Equal
        on every rank by construction, so DDP need not broadcast them (lipkit.train.parallel)."""
        return [(n, b) for n, b in self.named_buffers() if n.split(".", 1)[0] not in self.TOWERS]

    def prototype_vectors(self) -> list[nn.Parameter]:
        """The nCLIP heads' prototype matrices (model.prototypes.freeze_steps holds them still)."""
        return [head.prototypes for head in (getattr(self, "image_prototypes", None),
                                             getattr(self, "text_prototypes", None)) if head is not None]

    @property
    def towers_trainable(self) -> bool:
        return any(p.requires_grad for tower in (self.vision, self.text) for p in tower.parameters())

    def heads_from_features(
        self, image_features: torch.Tensor, text_features: torch.Tensor, heads: Iterable[str]
    ) -> dict[str, torch.Tensor]:
        """The heads on the towers' pooled features [B, width] (the adapters first, if any).
        Image features [B, V, width] are V views of each image: `image_features`, the CLIP
        embeddings and the prototype logits are the first view's, `image_view_embeds` [B, V, D]
        every view's CLIP embedding, and the "ssl" head's `image_ssl` [B, V, d] every view's
        projection (its BatchNorm over each view's batch, as SLIP runs its projector per view)."""
        views = self.image_adapter(image_features)
        text_features = self.text_adapter(text_features)
        image_features = views[:, 0] if views.ndim == 3 else views
        out = {"image_features": image_features, "text_features": text_features}
        if "clip" in heads:
            image_embeds = F.normalize(self.image_projection(views), dim=-1)
            if views.ndim == 3:
                out["image_view_embeds"] = image_embeds
                image_embeds = image_embeds[:, 0]
            out["image_embeds"] = image_embeds
            out["text_embeds"] = F.normalize(self.text_projection(text_features), dim=-1)
            out["logit_scale"] = self.log_logit_scale.exp()
        if "prototypes" in heads:
            out["image_protos"] = self.image_prototypes(image_features)
            out["text_protos"] = self.text_prototypes(text_features)
        if "ssl" in heads:
            if views.ndim != 3:
                raise ValueError("the ssl head needs several views of each image (data.image_views >= 2)")
            out["image_ssl"] = torch.stack([self.image_ssl(views[:, v]) for v in range(views.shape[1])], dim=1)
        return out

    # ------------------------------------------------------------------ encoders (eval contract)
    # A model without CLIP projections (nCLIP alone) embeds in prototype space: its K logits are
    # the only space its objective aligns across the two modalities.
    def image_trunk(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features every image head reads: the tower, then the adapter (if any)."""
        return self.image_adapter(self.vision(images))

    def text_trunk(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pooled features every text head reads: the tower, then the adapter (if any)."""
        return self.text_adapter(self.text(tokens))

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Embeddings [B, D] of preprocessed images [B, C, H, W]: the CLIP projection of the
        image trunk's features (the prototype head's output for a model with no CLIP head);
        with `normalize`, each row of unit length."""
        f = self.image_trunk(images)
        x = self.image_projection(f) if "clip" in self.heads else self.image_prototypes(f)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Embeddings [B, D] of token ids [B, context_length] from the run's tokenizer, as
        `encode_image` makes them for images (so `image_embeds @ text_embeds.T` with both
        normalized are cosines)."""
        f = self.text_trunk(tokens)
        x = self.text_projection(f) if "clip" in self.heads else self.text_prototypes(f)
        return F.normalize(x, dim=-1) if normalize else x

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        if "clip" in self.heads:
            self.log_logit_scale.clamp_(max=math.log(self.cfg.max_logit_scale))

    # ------------------------------------------------------------------ moved
    # Models do not know the run-directory format (lipkit.runs); these names point there for one
    # release, without importing it.
    def save_pretrained(self, run_dir: str | Path) -> None:
        raise LipkitError(f"LIPModel.save_pretrained moved: use lipkit.runs.save_model(model, Path({str(run_dir)!r}))")

    @classmethod
    def from_pretrained(cls, run_dir: str | Path) -> "LIPModel":
        raise LipkitError(f"LIPModel.from_pretrained moved: use lipkit.load({str(run_dir)!r}) "
                          "or lipkit.runs.load_model")
