"""The one YAML reader behind every file and `--set` value lipkit reads (run configs, theory
configs, experiment specs, a run's config.yaml in reports).

- Safe loading (plain data only).
- YAML 1.2 numbers: `5e-4`, `1e6` and `1.0e5` are floats. PyYAML follows YAML 1.1, where a float
  needs a dot and a signed exponent, so those were strings and a typed field refused them.
- UTF-8 only (see utf8_text), and a syntax error names the file, line and column."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from lipkit.typed_config import ConfigError
from lipkit.utf8_text import NotUtf8Error, decode_utf8


class _Loader(yaml.SafeLoader):
    """SafeLoader plus the YAML 1.2 floats that YAML 1.1 reads as strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


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
