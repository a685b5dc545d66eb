"""A config as layers of plain mappings, before it is typed (lipkit.config): presets and YAML
files, their `base:` chains, and `--set a.b=c` overrides (values parsed as YAML 1.2)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lipkit.typed_config import ConfigError
from lipkit.yaml_loader import parse_yaml, read_yaml

PRESET_DIR = Path(__file__).parent / "presets"
RECIPE_DIR = PRESET_DIR / "recipes"  # layers named by a config's `recipe:` (not presets of their own)


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
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


def load_layers(name_or_path: str, seen: tuple[str, ...] = ()) -> dict:
    path = resolve_config_path(name_or_path)
    if str(path) in seen:
        raise ConfigError(f"config '{path}': 'base' chain loops back on itself")
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config '{path}': expected a mapping at the top level")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"config '{path}': base: expected a preset name or a file, got {base!r}")
    base_ref = str(path.parent / base) if (path.parent / base).is_file() else str(base)
    return deep_merge(load_layers(base_ref, seen + (str(path),)), data)


def with_recipe(data: dict) -> dict:
    """`data` over the layer its `recipe:` names (presets/recipes/NAME.yaml; "basic", the default,
    has none): the recipe sets what the run's own layers leave unset."""
    recipe = data.get("recipe", "basic")
    if recipe == "basic":
        return data
    path = RECIPE_DIR / f"{recipe}.yaml"
    if not isinstance(recipe, str) or not path.is_file():
        known = ", ".join(["basic", *sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))])
        raise ConfigError(f"recipe: unknown recipe {recipe!r}; recipes: {known}")
    return deep_merge(read_yaml(path) or {}, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set '{text}': expected KEY=VALUE, e.g. train.steps=100")
    key, raw = text.split("=", 1)
    try:
        value = parse_yaml(raw, f"--set '{text}'") if raw != "" else ""
    except ConfigError:  # not YAML: the text itself (e.g. a path with a colon)
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str], source: str = "") -> dict:
    """`overrides` (KEY=VALUE texts) set into a copy of `data`. A key they reach into that is a
    value, not a section, is blamed on whoever set it: an earlier override, or `source` (the
    config file `data` was read from)."""
    data = deep_merge({}, data)
    set_by: dict[tuple[str, ...], str] = {}
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                key = tuple(parts[: i + 1])
                culprit = set_by.get(key)
                if culprit is None and source:
                    raise ConfigError(f"{source}: {'.'.join(key)}: expected a section (a mapping of keys), "
                                      f"got {node!r}")
                raise ConfigError(f"--set '{text}': '{p}' is a value"
                                  f"{f' (set by --set {culprit!r})' if culprit else ''}, not a section")
        node[parts[-1]] = value
        set_by[tuple(parts)] = text
    return data
