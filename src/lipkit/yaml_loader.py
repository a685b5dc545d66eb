"""The one YAML reader behind every file and `--set` value lipkit reads (run configs, theory
configs, experiment specs, a run's config.yaml in reports).

- Safe loading (plain data only).
- The YAML 1.2 core schema for plain scalars: `5e-4`, `1e6` and `1.0e5` are floats; `1_000`,
  `1:30`, `yes`/`no`/`on`/`off` and dates are strings; `010` is ten (`0o10` is eight, `0x10`
  sixteen). PyYAML follows YAML 1.1, which read each of those otherwise (a float needed a dot and a
  signed exponent; `1_000` was 1000 and `1:30` 90).
- A key given twice in one mapping is an error naming both lines (YAML 1.1 readers keep the last).
- UTF-8 only (see utf8_text), and a syntax error names the file, line and column."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import yaml
from yaml.constructor import ConstructorError

from lipkit.typed_config import ConfigError
from lipkit.utf8_text import NotUtf8Error, decode_utf8

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader with the YAML 1.2 core schema's plain scalars and unique mapping keys."""

    # replaces SafeLoader's YAML 1.1 resolvers (add_implicit_resolver fills it, below)
    yaml_implicit_resolvers: ClassVar[dict] = {}

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = first_seen.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: SafeConstructor refuses it below
                    continue
                if first is not key_node.start_mark:
                    raise ConstructorError(None, None, f"duplicate key {key!r} (first at line {first.line + 1})",
                                           key_node.start_mark)
        return super().construct_mapping(node, deep)


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    try:
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text, 10)  # leading zeros too: 010 is ten in YAML 1.2
    except ValueError:
        raise ConstructorError(None, None, f"{text!r} is not an integer", node.start_mark) from None


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes a string wherever _Loader would read it as another type."""

    yaml_implicit_resolvers: ClassVar[dict] = {}


for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("tag:yaml.org,2002:int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),  # before float: "12" is an int
    ("tag:yaml.org,2002:float",
     r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
     "-+0123456789."),
    ("tag:yaml.org,2002:null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    (_MERGE_TAG, r"<<", "<"),
):
    for _cls in (_Loader, _Dumper):
        _cls.add_implicit_resolver(_tag, re.compile(rf"^(?:{_pattern})$"), list(_first))
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def parse_yaml(text: str, source: str) -> Any:
    """`text` as plain data; `source` (a path, or "--set 'k=v'") names it in the error."""
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader: plain data only
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "syntax error"
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML ({str(e).splitlines()[0]})") from None


def read_yaml(path: str | Path) -> Any:
    """A YAML file as plain data; a missing, unreadable or non-UTF-8 file is a ConfigError naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = decode_utf8(data, str(path))
    except NotUtf8Error as e:
        raise ConfigError(str(e)) from None
    return parse_yaml(text, str(path))


def dump_yaml(data: Any) -> str:
    """`data` (plain data) as YAML that `parse_yaml` reads back as the same values."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
