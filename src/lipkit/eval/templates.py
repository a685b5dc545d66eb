"""Zero-shot prompts: a class's prompts from templates (`class_prompts`) and a prompts file
(`load_prompts`), read by the dataset readers and the zero-shot task alike. Templates follow
CLIP_benchmark: a list of format strings with a `{c}` placeholder ("a photo of a {c}."), a list of
callables (classname -> text, as in open_clip), or a mapping classname -> list of ready-made
prompts (per-class prompts, as in CuPL)."""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .errors import EvalError

Template = str | Callable[[str], str]


def _fill(template: Template, classname: str) -> str:
    if callable(template):
        return template(classname)
    # '{c}' is CLIP_benchmark's placeholder, '{}' lipkit's caption templates'; accept either.
    if "{c}" in template:
        return template.replace("{c}", classname)
    if "{}" in template:
        return template.replace("{}", classname)
    raise ValueError(f"template {template!r} has no '{{c}}' or '{{}}' placeholder for the class name")


def class_prompts(classnames: Sequence[str],
                  templates: Sequence[Template] | Mapping[str, Sequence[str]]) -> list[list[str]]:
    """The prompts of each class, in class order."""
    if not classnames:
        raise ValueError("classnames is empty")
    if isinstance(templates, Mapping):
        missing = [c for c in classnames if not templates.get(c)]
        if missing:
            raise ValueError(f"no prompts for classes {missing[:5]}")
        return [list(templates[c]) for c in classnames]
    if isinstance(templates, str) or not templates:
        raise ValueError("templates must be a non-empty list of templates (not a single string)")
    return [[_fill(t, c) for t in templates] for c in classnames]


def load_prompts(path: str | Path) -> tuple[list[str], list[str] | dict[str, list[str]]]:
    """(class_names, templates) from a JSON file with "class_names" (a list of strings) and
    "templates" (format strings with '{}' or '{c}', or a mapping class name -> prompts)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names, templates = data["class_names"], data["templates"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EvalError(f"{path}: not a prompts file with 'class_names' and 'templates' "
                        f"({type(e).__name__}: {e})") from None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise EvalError(f"{path}: 'class_names' must be a non-empty list of strings")
    if isinstance(templates, dict):
        missing = [n for n in names if not templates.get(n)]
        if missing:
            raise EvalError(f"{path}: 'templates' has no prompts for class {missing[0]!r}")
    elif not (isinstance(templates, list) and templates
              and all(isinstance(t, str) and ("{}" in t or "{c}" in t) for t in templates)):
        raise EvalError(f"{path}: 'templates' must be a non-empty list of strings with a '{{}}' "
                        "or '{c}' placeholder, or a mapping class name -> prompts")
    return names, templates
