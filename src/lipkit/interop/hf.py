"""Hugging Face `transformers` CLIP: the directory `CLIPModel.from_pretrained` and `CLIPProcessor`
read, written from a lipkit model and read back into one.

The directory holds config.json, model.safetensors, the run's own tokenizer.json with a
tokenizer_config.json naming the generic fast tokenizer class (lipkit's byte-level BPE is not
OpenAI's, whose CLIPTokenizer would rebuild OpenAI's pre-tokenisation around the vocabulary), and
preprocessor_config.json for the CLIP image processor (resize the shorter side, centre crop,
normalise: lipkit's evaluation transform). transformers is imported only to check an export and
to read a model in.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from lipkit.config import ModelConfig, TextConfig, VisionConfig
from lipkit.data.transforms import ImageTransform
from lipkit.files import write_json
from lipkit.runs.directory import write_tensors
from lipkit.tokenizer import Tokenizer

from .layout import (
    InteropError,
    Rule,
    affine,
    per_block,
    pickled_weights_refused,
    rename,
    rgb_normalisation,
    text_pooling,
    unbatched,
)
from .agreement import Foreign, Target

FORMAT = "hf"
LAYER_NORM_EPS = 1e-5  # torch's default, which lipkit's LayerNorms use
BICUBIC = 3  # PIL.Image.Resampling.BICUBIC, as the image processor stores it


def _split_qkv(ours: str, theirs: str) -> Rule:
    """Our fused q/k/v rows are their three projections, in that order."""
    names = tuple(f"self_attn.{p}_proj.{theirs}" for p in "qkv")
    return Rule(ours, names, lambda t: t.chunk(3, 0), lambda *ts: torch.cat(ts, 0))


BLOCK = [*affine("norm1", "layer_norm1"), _split_qkv("attn.qkv.weight", "weight"), _split_qkv("attn.qkv.bias", "bias"),
         *affine("attn.proj", "self_attn.out_proj"), *affine("norm2", "layer_norm2"),
         *affine("mlp.0", "mlp.fc1"), *affine("mlp.2", "mlp.fc2")]


def rules(cfg: ModelConfig) -> list[Rule]:
    v, t = "vision_model", "text_model"
    return [
        rename("vision.patchify.weight", f"{v}.embeddings.patch_embedding.weight"),
        unbatched("vision.cls_token", f"{v}.embeddings.class_embedding", 2),
        unbatched("vision.pos_embed", f"{v}.embeddings.position_embedding.weight", 1),
        *affine("vision.norm_pre", f"{v}.pre_layrnorm"),
        *per_block(BLOCK, "vision.transformer.blocks", f"{v}.encoder.layers", cfg.vision.layers),
        *affine("vision.norm_post", f"{v}.post_layernorm"),
        rename("image_projection.weight", "visual_projection.weight"),
        rename("text.token_embed.weight", f"{t}.embeddings.token_embedding.weight"),
        unbatched("text.pos_embed", f"{t}.embeddings.position_embedding.weight", 1),
        *per_block(BLOCK, "text.transformer.blocks", f"{t}.encoder.layers", cfg.text.layers),
        *affine("text.norm_final", f"{t}.final_layer_norm"),
        rename("text_projection.weight", "text_projection.weight"),
        rename("log_logit_scale", "logit_scale"),
    ]


# ----------------------------------------------------------------------------- export
def check_tokenizer(cfg: ModelConfig, tokenizer: Tokenizer) -> None:
    if tokenizer.eos_id == 2:
        raise InteropError(f"{FORMAT}: the tokenizer's end token is id 2, which Hugging Face CLIP reads as its legacy "
                           "argmax pooling; train with model.text.eos_last=true (the fashion-tiny preset sets it)")
    if cfg.text.pooling == "argmax" and tokenizer.eos_id != cfg.text.vocab_size - 1:
        raise InteropError(f"{FORMAT}: model.text.pooling=argmax needs the end token to be the highest id")


def _tower(cfg: VisionConfig | TextConfig, embed_dim: int) -> dict:
    return {"hidden_size": cfg.width, "intermediate_size": int(cfg.width * cfg.mlp_ratio),
            "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads, "hidden_act": cfg.activation,
            "layer_norm_eps": LAYER_NORM_EPS, "attention_dropout": 0.0, "projection_dim": embed_dim}


def model_config(cfg: ModelConfig, tokenizer: Tokenizer, log_logit_scale: float) -> dict:
    v, t = cfg.vision, cfg.text
    return {
        "architectures": ["CLIPModel"], "model_type": "clip", "dtype": "float32",
        "projection_dim": cfg.embed_dim, "logit_scale_init_value": log_logit_scale,
        "vision_config": {**_tower(v, cfg.embed_dim), "image_size": v.image_size, "patch_size": v.patch_size,
                          "num_channels": 3},
        "text_config": {**_tower(t, cfg.embed_dim), "vocab_size": t.vocab_size, "max_position_embeddings": t.context_length,
                        "pad_token_id": tokenizer.pad_id, "bos_token_id": tokenizer.sos_id, "eos_token_id": tokenizer.eos_id},
    }


def write_tokenizer(tokenizer: Tokenizer, out: Path) -> None:
    """tokenizer.json (the run's own) and a tokenizer_config.json for transformers' AutoTokenizer.
    Where id 0 is a real token (OpenAI's "!"), transformers would make the padding token special and
    split it out of text: such a vocabulary pads with its end token instead, as OpenAI's CLIP does
    (the end token is pooled first; what follows it changes nothing)."""
    pad, start, end = tokenizer.special_tokens
    if tokenizer.pads_with_special_token:
        tokenizer.save(out)
    else:
        pad = end
        hf = Tokenizer.from_hf(tokenizer.hf, tokenizer.context_length).hf
        hf.enable_padding(length=tokenizer.context_length, pad_id=tokenizer.eos_id, pad_token=end)
        hf.save(str(out / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": start, "eos_token": end, "pad_token": pad,
              "model_max_length": tokenizer.context_length, "processor_class": "CLIPProcessor"}
    write_json(out / "tokenizer_config.json", config, indent=2)


def write(out: Path, cfg: ModelConfig, state: dict[str, torch.Tensor], tokenizer: Tokenizer,
          preprocess: ImageTransform) -> None:
    log_scale = float(state["logit_scale"])
    write_json(out / "config.json", model_config(cfg, tokenizer, log_scale), indent=2)
    write_tensors(state, out / "model.safetensors", metadata={"format": "pt"})
    write_tokenizer(tokenizer, out)
    mean, std = rgb_normalisation(preprocess)
    processor = {
        "image_processor_type": "CLIPImageProcessor", "processor_class": "CLIPProcessor",
        "do_resize": True, "size": {"shortest_edge": preprocess.size}, "resample": BICUBIC,
        "do_center_crop": True, "crop_size": {"height": preprocess.size, "width": preprocess.size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
        "image_mean": mean, "image_std": std,
    }
    write_json(out / "preprocessor_config.json", processor, indent=2)


def _transformers():
    from .gateway import prepare_torchvision

    prepare_torchvision()  # transformers' CLIP classes import torchvision where it is installed (.venv-peer)
    try:
        import transformers
    except ImportError as e:
        raise InteropError(f"{FORMAT}: transformers is not installed ({e}); pip install -c constraints.txt "
                           "'.[towers]'") from None
    transformers.utils.logging.disable_progress_bar()  # lipkit prints one line per conversion
    return transformers


def _pooled(out) -> torch.Tensor:
    """get_*_features returns the projected features (transformers 5: as pooler_output)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _loaded(path: Path, load):
    """`load()`, with transformers' complaint about a missing or unreadable file as one line."""
    try:
        return load()
    except pickle.UnpicklingError as e:  # refused by torch.load(weights_only=True): no code ran
        raise pickled_weights_refused(f"hf:{path}", e) from None
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InteropError(f"hf:{path}: transformers cannot load it: {first}") from None


def _encoders(path: Path, context_length: int):
    """(model, processor, encode_image(pixels), encode_text(captions), tokenize(captions)) of a CLIP
    directory, through transformers' own CLIPModel and CLIPProcessor, offline."""
    transformers = _transformers()
    model = _loaded(path, lambda: transformers.CLIPModel.from_pretrained(
        str(path), local_files_only=True, dtype=torch.float32).eval())
    processor = _loaded(path, lambda: transformers.CLIPProcessor.from_pretrained(str(path), local_files_only=True))

    def tokenize(captions: list[str]) -> dict:
        return processor.tokenizer(captions, padding="max_length", max_length=context_length, truncation=True,
                                   return_tensors="pt")

    @torch.no_grad()
    def encode_image(pixels: torch.Tensor) -> torch.Tensor:
        return _pooled(model.get_image_features(pixel_values=pixels))

    @torch.no_grad()
    def encode_text(captions: list[str]) -> torch.Tensor:
        batch = tokenize(captions)
        return _pooled(model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))

    return model, processor, encode_image, encode_text, lambda captions: tokenize(captions)["input_ids"]


def exported(path: Path, tokenizer: Tokenizer) -> Target:
    """The written directory as transformers loads it (for the export's check)."""
    _, _, encode_image, encode_text, tokenize = _encoders(path, tokenizer.context_length)
    return Target(encode_image, encode_text, tokenize)


# ----------------------------------------------------------------------------- import
def _activation(name: str, part: str) -> str:
    if name not in ("gelu", "quick_gelu"):
        raise InteropError(f"{FORMAT}: {part}.hidden_act={name} has no counterpart (lipkit: gelu, quick_gelu)")
    return name


def _mlp_ratio(tower, part: str) -> float:
    ratio = tower.intermediate_size / tower.hidden_size
    if int(tower.hidden_size * ratio) != tower.intermediate_size:
        raise InteropError(f"{FORMAT}: {part}.intermediate_size={tower.intermediate_size} is not a whole multiple "
                           f"lipkit can build from hidden_size={tower.hidden_size}")
    return ratio


def read(spec: str) -> Foreign:
    """`hf:PATH`: a local directory with a CLIPModel (config.json, weights) and its tokenizer."""
    path = Path(spec)
    if not (path / "config.json").is_file():
        raise InteropError(f"hf:{spec}: not a local Hugging Face model directory (no config.json); "
                           "lipkit does not download models")
    transformers = _transformers()
    config = _loaded(path, lambda: transformers.AutoConfig.from_pretrained(str(path), local_files_only=True))
    if config.model_type != "clip":
        raise InteropError(f"hf:{spec}: model_type {config.model_type!r}; only CLIP (CLIPModel) imports")
    v, t = config.vision_config, config.text_config
    for part, tower in (("vision_config", v), ("text_config", t)):
        if abs((tower.layer_norm_eps or 0) - LAYER_NORM_EPS) > 1e-12:
            raise InteropError(f"{FORMAT}: {part}.layer_norm_eps={tower.layer_norm_eps} has no counterpart (lipkit: 1e-5)")
    if v.num_channels != 3:
        raise InteropError(f"{FORMAT}: vision_config.num_channels={v.num_channels}: only RGB models import")
    model, processor, encode_image, encode_text, tokenize = _encoders(path, t.max_position_embeddings)
    hf_tokenizer = processor.tokenizer
    tokenizer = Tokenizer.from_hf(hf_tokenizer.backend_tokenizer, t.max_position_embeddings)
    end_id = t.eos_token_id[0] if isinstance(t.eos_token_id, list) else t.eos_token_id
    if end_id == 2:  # legacy configs: transformers pools at the highest id
        end_id = tokenizer.eos_id
    pooling = text_pooling(tokenizer.pads_with_special_token, end_id, t.vocab_size, FORMAT)
    model_cfg = ModelConfig(
        vision=VisionConfig(image_size=v.image_size, patch_size=v.patch_size, channels=3, width=v.hidden_size,
                            layers=v.num_hidden_layers, heads=v.num_attention_heads, mlp_ratio=_mlp_ratio(v, "vision_config"),
                            activation=_activation(v.hidden_act, "vision_config")),
        text=TextConfig(vocab_size=t.vocab_size, context_length=t.max_position_embeddings, width=t.hidden_size,
                        layers=t.num_hidden_layers, heads=t.num_attention_heads, mlp_ratio=_mlp_ratio(t, "text_config"),
                        pooling=pooling, activation=_activation(t.hidden_act, "text_config")),
        embed_dim=config.projection_dim, heads=["clip"],
    )
    image = processor.image_processor
    notes = []
    crop = getattr(image, "crop_size", None) or {}
    if not (image.do_center_crop and crop.get("height") == crop.get("width") == v.image_size
            and (image.size or {}).get("shortest_edge") == v.image_size):
        notes.append("its image processor does not resize the shorter side to the model's size and centre-crop; "
                     "lipkit's preprocessing does")
    state = {k: p for k, p in model.state_dict().items() if not k.endswith("position_ids")}
    return Foreign(model_cfg, state, tokenizer, list(image.image_mean), list(image.image_std),
                   Target(encode_image, encode_text, tokenize), notes)
