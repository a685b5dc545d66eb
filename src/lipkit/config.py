"""Typed run configuration: dataclasses for model, objective, data and train; YAML in and out;
`--set a.b=c` overrides. Every unknown key or wrong type is a one-line `ConfigError`."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lipkit.errors import LipkitError

PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(LipkitError, ValueError):
    """A configuration problem, stated in one line that names the key."""


# --------------------------------------------------------------------------- model
@dataclass
class VisionConfig:
    name: Literal["vit"] = "vit"
    image_size: int = 28
    patch_size: int = 4
    channels: int = 1
    width: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0


@dataclass
class TextConfig:
    name: Literal["transformer"] = "transformer"
    vocab_size: int = 1000  # BPE target size; the run records the trained tokenizer's real size
    context_length: int = 32
    width: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    causal: bool = True
    pooling: Literal["eos", "mean"] = "eos"


@dataclass
class PrototypeHeadConfig:
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    num_prototypes: int = 8192


@dataclass
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    embed_dim: int = 128
    init_logit_scale: float = 1 / 0.07
    max_logit_scale: float = 100.0
    prototypes: PrototypeHeadConfig = field(default_factory=PrototypeHeadConfig)
    # Which heads to build: "clip" (linear projections) and/or "prototypes" (nCLIP heads).
    # Empty means "what the objective needs"; the trainer fills it in and the run records it.
    heads: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- objectives
@dataclass
class ClipObjectiveConfig:
    direction_reduction: Literal["mean", "sum"] = "mean"


@dataclass
class NClipObjectiveConfig:
    temperature: float = 0.1  # student temperature tau
    target_temperature: float = 0.05  # sharpened targets tau_t
    stopgrad_target: bool = True
    balance: Literal["memax", "sinkhorn", "center", "none"] = "memax"
    lambda_smooth: float = 1.0  # weight of the ME-MAX smoothness term (balance = memax)
    lambda_sharp: float = 0.0  # weight of the sharpness (per-sample entropy) term
    sinkhorn_iterations: int = 3
    sinkhorn_epsilon: float = 0.05
    center_momentum: float = 0.9


@dataclass
class XClipObjectiveConfig:
    w_clip: float = 1.0
    w_nclip: float = 1.0


@dataclass
class ClipRegObjectiveConfig:
    form: Literal["sqdist", "neg_cos"] = "sqdist"
    lam: float = field(default=0.1, metadata={"key": "lambda"})
    scale_by_logit_scale: bool = True
    pairs: Literal["positive", "negative", "both"] = "positive"


@dataclass
class ObjectiveConfig:
    name: str = "clip"
    clip: ClipObjectiveConfig = field(default_factory=ClipObjectiveConfig)
    nclip: NClipObjectiveConfig = field(default_factory=NClipObjectiveConfig)
    xclip: XClipObjectiveConfig = field(default_factory=XClipObjectiveConfig)
    clip_reg: ClipRegObjectiveConfig = field(default_factory=ClipRegObjectiveConfig)


# --------------------------------------------------------------------------- data
@dataclass
class DataConfig:
    source: Literal["fashion-mnist"] = "fashion-mnist"
    # Training captions are drawn from these templates; evaluation uses a disjoint set.
    caption_templates: list[str] = field(
        default_factory=lambda: [
            "a photo of a {}.",
            "a picture of a {}.",
            "an image of a {}.",
            "a {} in grayscale.",
            "a small photo of the {}.",
            "this is a {}.",
        ]
    )
    train_limit: int = 0  # use only the first N training images (0 = all)
    num_workers: int = 0


# --------------------------------------------------------------------------- train
@dataclass
class TrainConfig:
    steps: int = 470
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup_steps: int = 50
    min_lr_ratio: float = 0.0
    grad_clip_norm: float = 0.0  # 0 disables clipping
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 leaves torch's default
    log_every_steps: int = 10
    save_every_steps: int = 0  # 0 saves only at the end
    progress: bool = True


@dataclass
class EvalConfig:
    linear_train_limit: int = 10000  # training images used to fit the linear probe
    batch_size: int = 1000


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------- (de)serialisation
def _key_of(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of {sorted(_keys(tp))}, got {value!r}")
        return _from_dict(tp, value, path)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{path}: expected one of {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected bool, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected float, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected str, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} at {path}")  # a bug in a dataclass, not user input


def _keys(cls: type) -> dict[str, dataclasses.Field]:
    return {_key_of(f): f for f in dataclasses.fields(cls)}


def _from_dict(cls: type, data: dict, path: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = _keys(cls)
    kwargs = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise ConfigError(f"unknown key '{full}'; allowed keys: {', '.join(fields)}")
        f = fields[key]
        kwargs[f.name] = _coerce(value, hints[f.name], full)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[_key_of(f)] = to_dict(v) if dataclasses.is_dataclass(v) else (list(v) if isinstance(v, list) else v)
    return out


def from_dict(data: dict) -> RunConfig:
    return _from_dict(RunConfig, data)


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    raise ConfigError(
        f"config '{name_or_path}' is neither a file nor a preset; presets: {', '.join(available_presets())}"
    )


def _load_raw(name_or_path: str, seen: tuple[str, ...] = ()) -> dict:
    path = resolve_config_path(name_or_path)
    if str(path) in seen:
        raise ConfigError(f"config '{path}': 'base' chain loops back on itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config '{path}': not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config '{path}': expected a mapping at the top level")
    base = data.pop("base", None)
    if base is None:
        return data
    base_ref = str(path.parent / base) if (path.parent / base).is_file() else str(base)
    return _deep_merge(_load_raw(base_ref, seen + (str(path),)), data)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set '{text}': expected KEY=VALUE, e.g. train.steps=100")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = _deep_merge({}, data)
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set '{text}': '{p}' is a value, not a section")
        node[parts[-1]] = value
    return data


def load_config(name_or_path: str | None = None, overrides: list[str] = ()) -> RunConfig:
    data = _load_raw(name_or_path) if name_or_path else {}
    return from_dict(apply_overrides(data, list(overrides)))


def save_config(cfg: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
