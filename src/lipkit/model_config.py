"""The model's typed configuration (`model.*`): towers, heads, LoRA and LiT locking, with the
architecture checks `ModelConfig.validate` makes before a run writes anything. lipkit.config
re-exports every name here."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from lipkit.typed_config import ConfigError

@dataclass
class VisionConfig:
    # vit: trained from scratch; efficientnet_lite0: ImageNet CNN (224 px, 3 channels, 1280-d
    # features; the ViT fields below do not apply to it)
    name: Literal["vit", "efficientnet_lite0"] = "vit"
    pretrained: bool = False  # load the tower's packaged weights (efficientnet_lite0)
    image_size: int = 28
    patch_size: int = 4
    channels: int = 1
    width: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    # FLIP: fraction of patch tokens dropped at random in training (the cls token is always kept);
    # the tower's compute falls about in proportion. 0 disables; evaluation always sees all patches.
    patch_dropout: float = 0.0
    # MLP activation: gelu (erf), or quick_gelu x * sigmoid(1.702 x) as OpenAI's CLIP (imported models)
    activation: Literal["gelu", "quick_gelu"] = "gelu"


@dataclass
class TextConfig:
    # transformer: trained from scratch with a BPE tokenizer trained on the captions; minilm:
    # all-MiniLM-L6-v2 (384-d, mean-pooled) with its own WordPiece tokenizer (only
    # context_length applies to it)
    name: Literal["transformer", "minilm"] = "transformer"
    pretrained: bool = False  # load the tower's packaged weights (minilm)
    vocab_size: int = 1000  # BPE target size; the run records the trained tokenizer's real size
    context_length: int = 32
    width: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    causal: bool = True
    # eos: the last non-padding position; argmax: the position of the highest token id (OpenAI
    # CLIP's rule, for imported models whose vocabulary has a real token at the padding id 0)
    pooling: Literal["eos", "mean", "argmax"] = "eos"
    activation: Literal["gelu", "quick_gelu"] = "gelu"
    # The trained BPE gives <eos> the vocabulary's last id instead of id 2, as CLIP's end token:
    # Hugging Face CLIP reads eos_token_id 2 as its legacy argmax pooling, so exporting there needs
    # this. A run's ids live in its tokenizer.json; the field only shapes newly trained tokenizers.
    eos_last: bool = False


@dataclass
class PrototypeHeadConfig:
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    # K: of the order of the concepts the data can express, and at most the global batch (ME-MAX
    # can spread confident predictions over at most N prototypes of a batch of N)
    num_prototypes: int = 256
    # BatchNorm after the MLP's first layer, with the statistics of the global batch. It removes
    # the component every sample shares at initialisation, without which nCLIP alone collapses
    # to a constant output on real data (docs/guides/objectives.md). Runs recorded before this field
    # existed had none.
    batch_norm: bool = field(default=True, metadata={"recorded_default": False})
    # the prototype vectors stay fixed for the first N optimizer steps (SwAV's and clip-rocket's
    # freeze_prototypes_niters), while the rest of the head learns
    freeze_steps: int = 0


@dataclass
class SslHeadConfig:
    """SLIP's image projector for the SimCLR term: `layers` linear layers, BatchNorm (over the
    global batch) and ReLU between them (SLIP: 3 layers, 4096 hidden, 256 out)."""

    hidden_dim: int = 4096
    out_dim: int = 256
    layers: int = 3


LORA_HEADS = ("projections", "logit_scale", "prototypes", "ssl", "adapters")


@dataclass
class LoraTargetsConfig:
    """The linear projections of each tower that get adapters: "attention" (each block's q/k/v
    and output projections; lipkit's fused q/k/v gets one adapter), "mlp" (each block's two MLP
    layers). A tower with none stays wholly frozen."""

    image: list[Literal["attention", "mlp"]] = field(default_factory=lambda: ["attention"])
    text: list[Literal["attention", "mlp"]] = field(default_factory=lambda: ["attention"])


@dataclass
class LoraConfig:
    """LoRA (Hu et al. 2021; lipkit.models.lora): every base weight frozen, each target projection
    W x + b gains (alpha / rank) B A dropout(x), with B zero at the start (the model starts as the
    base model). Only the adapters and the heads in `train_heads` train."""

    enabled: bool = False
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0  # on the adapters' input, in training (the run's random stream)
    targets: LoraTargetsConfig = field(default_factory=LoraTargetsConfig)
    # heads that train beside the adapters: the CLIP projections, the logit scale, the nCLIP
    # prototype heads, SLIP's projector, the residual adapters (model.adapter_layers)
    train_heads: list[Literal["projections", "logit_scale", "prototypes", "ssl", "adapters"]] = field(
        default_factory=lambda: list(LORA_HEADS))


@dataclass
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    embed_dim: int = 128
    init_logit_scale: float = 1 / 0.07
    learn_logit_scale: bool = True  # false fixes the scale at init_logit_scale (a fixed temperature)
    max_logit_scale: float = 100.0
    prototypes: PrototypeHeadConfig = field(default_factory=PrototypeHeadConfig)
    ssl: SslHeadConfig = field(default_factory=SslHeadConfig)  # built only with the "ssl" head (SLIP)
    # LiT: freeze a tower (weights and norm statistics) except its last N blocks.
    lock_image: bool = False
    lock_image_unlocked_blocks: int = 0
    lock_text: bool = False
    lock_text_unlocked_blocks: int = 0
    # Trainable residual MLP blocks on each tower's pooled features, shared by every head. With
    # locked towers (LiT) they are the only shared trainable trunk, so CLIP and nCLIP heads can
    # interact through them while the tower features stay cached.
    adapter_layers: int = 0
    # Which heads to build: "clip" (linear projections), "prototypes" (nCLIP heads), "ssl" (SLIP's
    # image projector).
    # Empty means "what the objective needs"; the trainer fills it in and the run records it.
    heads: list[str] = field(default_factory=list)
    lora: LoraConfig = field(default_factory=LoraConfig, metadata={"neutral_default": True})  # low-rank adapters on frozen towers

    def validate(self) -> None:
        """One-line ConfigErrors for architecture fields no model can be built with (sizes that
        must be positive, heads that must divide the width, patches that must tile the image);
        training calls this with the rest of the config, before anything is written. The ViT and
        text-transformer fields are checked only for the towers that read them."""
        v, t, p = self.vision, self.text, self.prototypes
        rules = [("embed_dim", self.embed_dim, self.embed_dim >= 1, ">= 1"),
                 ("init_logit_scale", self.init_logit_scale, 0 < self.init_logit_scale < math.inf, "> 0 and finite"),
                 ("max_logit_scale", self.max_logit_scale, self.max_logit_scale > 0, "> 0"),
                 ("prototypes.hidden_dim", p.hidden_dim, p.hidden_dim >= 1, ">= 1"),
                 ("prototypes.bottleneck_dim", p.bottleneck_dim, p.bottleneck_dim >= 1, ">= 1"),
                 ("prototypes.num_prototypes", p.num_prototypes, p.num_prototypes >= 1, ">= 1")]
        towers = ([("vision", v)] if v.name == "vit" else []) + ([("text", t)] if t.name == "transformer" else [])
        for name, tower in towers:
            rules += [(f"{name}.width", tower.width, tower.width >= 1, ">= 1"),
                      (f"{name}.layers", tower.layers, tower.layers >= 0, ">= 0"),
                      (f"{name}.heads", tower.heads, tower.heads >= 1, ">= 1"),
                      (f"{name}.mlp_ratio", tower.mlp_ratio, 0 < tower.mlp_ratio < math.inf, "> 0 and finite"),
                      (f"{name}.dropout", tower.dropout, 0 <= tower.dropout < 1, "in [0, 1)")]
        if v.name == "vit":
            rules += [("vision.image_size", v.image_size, v.image_size >= 1, ">= 1"),
                      ("vision.patch_size", v.patch_size, v.patch_size >= 1, ">= 1"),
                      ("vision.channels", v.channels, v.channels >= 1, ">= 1"),
                      ("vision.patch_dropout", v.patch_dropout, 0 <= v.patch_dropout < 1, "in [0, 1)")]
        if t.name == "transformer":
            rules += [("text.vocab_size", t.vocab_size, t.vocab_size >= 1, ">= 1"),
                      ("text.context_length", t.context_length, t.context_length >= 2,
                       ">= 2 (a start and an end token)")]
        lora = self.lora
        if lora.enabled:
            rules += [("lora.rank", lora.rank, lora.rank >= 1, ">= 1"),
                      ("lora.alpha", lora.alpha, 0 < lora.alpha < math.inf, "> 0 and finite"),
                      ("lora.dropout", lora.dropout, 0 <= lora.dropout < 1, "in [0, 1)")]
        for key, value, ok, rule in rules:
            if not ok:  # NaN fails every rule too
                raise ConfigError(f"model.{key}: must be {rule}, got {value}")
        if lora.enabled:
            if not lora.targets.image and not lora.targets.text:
                raise ConfigError("model.lora.targets: no tower has a target; name attention and/or mlp under "
                                  "model.lora.targets.image or model.lora.targets.text")
            for tower, locked in (("image", self.lock_image), ("text", self.lock_text)):
                if locked:
                    raise ConfigError(f"model.lock_{tower}: LoRA (model.lora.enabled) freezes every base weight "
                                      f"already; to keep the {tower} tower wholly frozen, set "
                                      f"model.lora.targets.{tower}=[]")
        if v.name == "vit" and v.image_size % v.patch_size:
            raise ConfigError(f"model.vision.patch_size: {v.patch_size} does not divide model.vision.image_size "
                              f"{v.image_size} (the patches tile the image)")
        for name, tower in towers:
            if tower.width % tower.heads:
                raise ConfigError(f"model.{name}.heads: {tower.heads} does not divide model.{name}.width "
                                  f"{tower.width} (each head takes width / heads channels)")
