"""Named benchmark architectures, built identically in lipkit and in open_clip."""
from __future__ import annotations

from dataclasses import dataclass

from lipkit.config import ModelConfig, TextConfig, VisionConfig


@dataclass(frozen=True)
class BenchArch:
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    context_length: int
    vocab_size: int
    text_width: int
    text_layers: int
    text_heads: int
    embed_dim: int
    batch_size: int
    head_width: int = 64  # vision heads = width / head_width, as open_clip
    mlp_ratio: float = 4.0

    @property
    def vision_heads(self) -> int:
        return self.vision_width // self.head_width

    def lipkit_config(self, heads: tuple[str, ...] = ("clip",)) -> ModelConfig:
        return ModelConfig(
            vision=VisionConfig(
                image_size=self.image_size, patch_size=self.patch_size, channels=3, width=self.vision_width,
                layers=self.vision_layers, heads=self.vision_heads, mlp_ratio=self.mlp_ratio,
            ),
            text=TextConfig(
                vocab_size=self.vocab_size, context_length=self.context_length, width=self.text_width,
                layers=self.text_layers, heads=self.text_heads, mlp_ratio=self.mlp_ratio,
            ),
            embed_dim=self.embed_dim,
            heads=list(heads),
        )

    def open_clip_config(self) -> dict:
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {
                "image_size": self.image_size, "patch_size": self.patch_size, "width": self.vision_width,
                "layers": self.vision_layers, "head_width": self.head_width, "mlp_ratio": self.mlp_ratio,
            },
            "text_cfg": {
                "context_length": self.context_length, "vocab_size": self.vocab_size, "width": self.text_width,
                "heads": self.text_heads, "layers": self.text_layers, "mlp_ratio": self.mlp_ratio,
            },
        }


ARCHS = {
    # The tiny config: ViT 64 px / patch 8 / width 256 / 6 layers; text 32 tokens, width 256,
    # 6 layers, 4 heads, vocab 49408; embed 256; batch 64.
    "tiny": BenchArch(64, 8, 256, 6, 32, 49408, 256, 6, 4, 256, batch_size=64),
    # open_clip's ViT-B-32 at batch 32.
    "vit-b-32": BenchArch(224, 32, 768, 12, 77, 49408, 512, 12, 8, 512, batch_size=32),
}
