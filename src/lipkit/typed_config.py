"""Strict typed dataclasses from plain mappings (YAML) and back.

Every unknown key or wrong type is a one-line `ConfigError` naming the key: the allowed keys, or
the expected type. A field may carry `metadata={"key": ...}` to use another name in YAML (e.g.
`lambda`, a Python keyword), and `metadata={"recorded_default": v}` for a field added after runs
were recorded: a config a run wrote before the field existed (`recorded=True`) means `v` by its
absence, whatever the new default; `metadata={"neutral_default": True}` for a field added whose
default keeps the behaviour from before it (`digest_dict` leaves it out while it holds that
default, so digests of configs recorded before it stay valid). Supported field types: nested dataclasses, Literal, list, bool, int,
float, str, and `T | None` of those (YAML null is None). `check_choices` makes the Literal check on a
dataclass built in code."""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from lipkit.errors import LipkitError


class ConfigError(LipkitError, ValueError):
    """A configuration problem, stated in one line that names the key."""


def _key_of(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str, recorded: bool = False) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # `T | None`: unset where the field allows it
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(value, inner, path, recorded)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of {sorted(_keys(tp))}, got {value!r}")
        return from_mapping(tp, value, path, recorded=recorded)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{path}: expected one of {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{path}[{i}]", recorded) for i, v in enumerate(value)]
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


def from_mapping(cls: type, data: dict, path: str = "", recorded: bool = False) -> Any:
    """An instance of dataclass `cls` from `data`; `path` prefixes the keys named in errors.
    `recorded`: `data` was written by a run, so a missing key takes its field's
    `recorded_default` (the behaviour before the field existed) where it has one."""
    hints = typing.get_type_hints(cls)
    fields = _keys(cls)
    kwargs = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise ConfigError(f"unknown key '{full}'; allowed keys: {', '.join(fields)}")
        f = fields[key]
        kwargs[f.name] = _coerce(value, hints[f.name], full, recorded)
    if recorded:
        for key, f in fields.items():
            if key not in data and "recorded_default" in f.metadata:
                kwargs[f.name] = f.metadata["recorded_default"]
            elif key not in data and dataclasses.is_dataclass(hints[f.name]):
                kwargs[f.name] = from_mapping(hints[f.name], {}, f"{path}.{key}" if path else key, recorded=True)
    return cls(**kwargs)


def check_choices(cfg: Any, path: str = "") -> None:
    """The ConfigError parsing raises, for the first Literal field of dataclass `cfg` (or of a
    section in it) whose value is not one of its choices: a config built or changed in code."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        full = f"{path}.{_key_of(f)}" if path else _key_of(f)
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_choices(value, full)
        elif typing.get_origin(hints[f.name]) is Literal:
            _coerce(value, hints[f.name], full)


def _default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def digest_dict(cfg: Any) -> dict:
    """`to_dict` without the `neutral_default` fields that hold their default: what a digest of
    the config (an experiment cell's) is taken of, so adding such a field changes no digest."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.metadata.get("neutral_default") and v == _default_of(f):
            continue
        if isinstance(v, list):
            out[_key_of(f)] = [digest_dict(x) if dataclasses.is_dataclass(x) else x for x in v]
        else:
            out[_key_of(f)] = digest_dict(v) if dataclasses.is_dataclass(v) else v
    return out


def to_dict(cfg: Any) -> dict:
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, list):  # lists of sections (data.sources) as lists of mappings
            out[_key_of(f)] = [to_dict(x) if dataclasses.is_dataclass(x) else x for x in v]
        else:
            out[_key_of(f)] = to_dict(v) if dataclasses.is_dataclass(v) else v
    return out
