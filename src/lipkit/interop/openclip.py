"""open_clip: the folder `open_clip.create_model_and_transforms("local-dir:OUT")` and
`open_clip.get_tokenizer("local-dir:OUT")` read, written from a lipkit model; and open_clip models
(`ARCH`, `ARCH:WEIGHTS_FILE`, or such a folder) read back into lipkit.

The folder holds open_clip_config.json (model_cfg and preprocess_cfg), open_clip_model.safetensors,
and the run's tokenizer as Hugging Face files, which the config names (`hf_tokenizer_name`), so
open_clip tokenises through transformers' AutoTokenizer. open_clip is imported only through
lipkit.interop.gateway (its torchvision shim), in the environment that has it (.venv-peer).
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

from .agreement import Foreign, Target
from .gateway import import_open_clip
from .hf import write_tokenizer
from .layout import (
    InteropError,
    Rule,
    affine,
    per_block,
    pickled_weights_refused,
    rename,
    rgb_normalisation,
    text_pooling,
    transposed,
    unbatched,
)

FORMAT = "open_clip"
LOCAL_DIR = "local-dir:"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"

BLOCK = [*affine("norm1", "ln_1"), rename("attn.qkv.weight", "attn.in_proj_weight"),
         rename("attn.qkv.bias", "attn.in_proj_bias"), *affine("attn.proj", "attn.out_proj"),
         *affine("norm2", "ln_2"), *affine("mlp.0", "mlp.c_fc"), *affine("mlp.2", "mlp.c_proj")]


def rules(cfg: ModelConfig) -> list[Rule]:
    return [
        rename("vision.patchify.weight", "visual.conv1.weight"),
        unbatched("vision.cls_token", "visual.class_embedding", 2),
        unbatched("vision.pos_embed", "visual.positional_embedding", 1),
        *affine("vision.norm_pre", "visual.ln_pre"),
        *per_block(BLOCK, "vision.transformer.blocks", "visual.transformer.resblocks", cfg.vision.layers),
        *affine("vision.norm_post", "visual.ln_post"),
        transposed("image_projection.weight", "visual.proj"),
        rename("text.token_embed.weight", "token_embedding.weight"),
        unbatched("text.pos_embed", "positional_embedding", 1),
        *per_block(BLOCK, "text.transformer.blocks", "transformer.resblocks", cfg.text.layers),
        *affine("text.norm_final", "ln_final"),
        transposed("text_projection.weight", "text_projection"),
        rename("log_logit_scale", "logit_scale"),
    ]


# ----------------------------------------------------------------------------- export
def check_tokenizer(cfg: ModelConfig, tokenizer: Tokenizer) -> None:
    if cfg.vision.activation != cfg.text.activation:
        raise InteropError(f"{FORMAT}: one activation for both towers (quick_gelu); this model has "
                           f"{cfg.vision.activation} (image) and {cfg.text.activation} (text)")
    if cfg.text.pooling == "argmax" and tokenizer.eos_id != cfg.text.vocab_size - 1:
        raise InteropError(f"{FORMAT}: model.text.pooling=argmax needs the end token to be the highest id")


def model_config(cfg: ModelConfig, tokenizer: Tokenizer, preprocess: ImageTransform) -> dict:
    v, t = cfg.vision, cfg.text
    mean, std = rgb_normalisation(preprocess)
    return {
        "model_cfg": {
            "embed_dim": cfg.embed_dim,
            "quick_gelu": v.activation == "quick_gelu",
            "vision_cfg": {"image_size": v.image_size, "patch_size": v.patch_size, "width": v.width,
                           "layers": v.layers, "head_width": v.width // v.heads, "mlp_ratio": v.mlp_ratio},
            "text_cfg": {"context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width,
                         "heads": t.heads, "layers": t.layers, "mlp_ratio": t.mlp_ratio, "pad_id": 0,
                         "pool_type": "argmax" if t.pooling == "argmax" else "eos", "eos_id": tokenizer.eos_id,
                         "hf_tokenizer_name": "lipkit"},  # any name: a local-dir folder reads its own files
        },
        "preprocess_cfg": {"size": preprocess.size, "mode": "RGB", "interpolation": "bicubic", "resize_mode": "shortest",
                           "mean": mean, "std": std},
    }


def write(out: Path, cfg: ModelConfig, state: dict[str, torch.Tensor], tokenizer: Tokenizer,
          preprocess: ImageTransform) -> None:
    write_json(out / CONFIG_FILE, model_config(cfg, tokenizer, preprocess), indent=2)
    write_tensors(state, out / WEIGHTS_FILE)
    write_tokenizer(tokenizer, out)


def _target(model, tokenize) -> Target:
    model.eval()

    @torch.no_grad()
    def encode_text(captions: list[str]) -> torch.Tensor:
        return model.encode_text(tokenize(captions))

    return Target(torch.no_grad()(model.encode_image), encode_text, tokenize)


def exported(path: Path, tokenizer: Tokenizer) -> Target:
    open_clip = import_open_clip()
    name = LOCAL_DIR + str(path)
    model, _, _ = open_clip.create_model_and_transforms(name)
    return _target(model, open_clip.get_tokenizer(name))


# ----------------------------------------------------------------------------- import
# open_clip settings with no lipkit counterpart: a model that sets one away from this value is refused.
VISION_DEFAULTS = {"ls_init_value": None, "attentional_pool": False, "no_ln_pre": False, "pos_embed_type": "learnable",
                   "pool_type": "tok", "act_kwargs": None, "norm_kwargs": None, "qk_norm": False,
                   "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False, "scale_attn": False,
                   "scale_fc": False, "timm_model_name": None}
TEXT_DEFAULTS = {"ls_init_value": None, "embed_cls": False, "no_causal_mask": False, "pad_id": 0, "proj_bias": False,
                 "proj_type": "linear", "act_kwargs": None, "norm_kwargs": None, "qk_norm": False,
                 "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False, "scale_attn": False,
                 "scale_fc": False, "hf_model_name": None}


def _check_config(model_cfg: dict, spec: str) -> None:
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    for part, given, defaults in (("vision_cfg", vision, VISION_DEFAULTS), ("text_cfg", text, TEXT_DEFAULTS)):
        for key, default in defaults.items():
            if given.get(key, default) != default:
                raise InteropError(f"open_clip:{spec}: {part}.{key}={given[key]!r} has no counterpart in lipkit's towers")
    if not isinstance(vision.get("layers"), int):
        raise InteropError(f"open_clip:{spec}: only ViT image towers import (vision_cfg.layers={vision.get('layers')!r})")
    if text.get("pool_type", "argmax") not in ("argmax", "eos"):
        raise InteropError(f"open_clip:{spec}: text_cfg.pool_type={text['pool_type']!r}: only towers pooled at the "
                           "end token import")


def _tokenizer(open_clip_tokenizer, context_length: int, spec: str) -> Tokenizer:
    """lipkit's copy of an open_clip tokenizer: a Hugging Face one's own backend, or OpenAI's BPE
    (SimpleTokenizer) rebuilt as a `tokenizers` pipeline."""
    backend = getattr(getattr(open_clip_tokenizer, "tokenizer", None), "backend_tokenizer", None)
    if backend is not None:
        return Tokenizer.from_hf(backend, context_length)
    if not hasattr(open_clip_tokenizer, "bpe_ranks"):
        raise InteropError(f"open_clip:{spec}: its tokenizer {type(open_clip_tokenizer).__name__} has no lipkit counterpart")
    from .openai_bpe import simple_tokenizer_pipeline

    return Tokenizer.from_hf(simple_tokenizer_pipeline(open_clip_tokenizer), context_length)


def read(spec: str) -> Foreign:
    """`open_clip:ARCH` (random initialisation), `open_clip:ARCH:FILE` (local weights), or
    `open_clip:DIR` (a folder with open_clip_config.json, e.g. lipkit's export)."""
    open_clip = import_open_clip()
    if Path(spec).is_dir():
        name, weights = LOCAL_DIR + spec, None
    else:
        name, _, weights = spec.partition(":")
        if weights and not Path(weights).is_file():
            raise InteropError(f"open_clip:{spec}: {weights} is not a file; lipkit does not download weights "
                               "(give a local weights file)")
    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        raise InteropError(f"open_clip:{spec}: unknown architecture {name!r}")
    _check_config(model_cfg, spec)
    try:
        model, _, _ = open_clip.create_model_and_transforms(name, pretrained=weights or None)
    except pickle.UnpicklingError as e:  # refused by torch.load(weights_only=True): no code ran
        raise pickled_weights_refused(f"open_clip:{spec}", e) from None
    except RuntimeError as e:
        raise InteropError(f"open_clip:{spec}: {str(e).splitlines()[0]}") from None
    if type(model).__name__ != "CLIP":
        raise InteropError(f"open_clip:{spec}: a {type(model).__name__}; only open_clip's CLIP class imports")
    v, t = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    context_length = t.get("context_length", 77)
    open_clip_tokenizer = open_clip.get_tokenizer(name)
    tokenizer = _tokenizer(open_clip_tokenizer, context_length, spec)
    vocab_size = t.get("vocab_size", 49408)
    end_id = t.get("eos_id", 2) if t.get("pool_type", "argmax") == "eos" else vocab_size - 1
    activation = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    width = v.get("width", 768)
    ours = ModelConfig(
        vision=VisionConfig(image_size=v.get("image_size", 224), patch_size=v.get("patch_size", 16), channels=3,
                            width=width, layers=v["layers"], heads=width // v.get("head_width", 64),
                            mlp_ratio=v.get("mlp_ratio", 4.0), patch_dropout=v.get("patch_dropout", 0.0),
                            activation=activation),
        text=TextConfig(vocab_size=vocab_size, context_length=context_length, width=t.get("width", 512),
                        layers=t.get("layers", 12), heads=t.get("heads", 8), mlp_ratio=t.get("mlp_ratio", 4.0),
                        pooling=text_pooling(tokenizer.pads_with_special_token, end_id, vocab_size, FORMAT),
                        activation=activation),
        embed_dim=model_cfg["embed_dim"], heads=["clip"],
    )
    pp = open_clip.get_model_preprocess_cfg(model)
    notes = []
    if pp.get("resize_mode", "shortest") != "shortest" or pp.get("interpolation", "bicubic") != "bicubic":
        notes.append(f"its preprocessing resizes with {pp.get('resize_mode')}/{pp.get('interpolation')}; lipkit's "
                     "resizes the shorter side (bicubic) and centre-crops")
    if model_cfg.get("init_logit_bias") is not None:
        notes.append("its logit bias (SigLIP-style) is left out: it shifts logits, not embeddings")
    state = {k: p for k, p in model.state_dict().items() if k != "logit_bias"}
    return Foreign(ours, state, tokenizer, list(pp["mean"]), list(pp["std"]),
                   _target(model, open_clip_tokenizer), notes)
