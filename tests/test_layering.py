"""The import layers (DESIGN.md, Contracts → Loading), read from the source: the file helpers
import nothing of lipkit; the run-directory format never imports models (loading does); data
imports none of models, run directories or loading. An import inside a function counts, and so
does whatever a module's own imports run when it is imported."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import lipkit

SRC = Path(lipkit.__file__).parent
MODULES = {".".join(("lipkit", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__"): p
           for p in SRC.rglob("*.py")}


def _named(node: ast.AST, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
        module = ".".join(base + ([node.module] if node.module else []))
        return [module] + [f"{module}.{a.name}" for a in node.names]  # `from lipkit import run_dir`
    return []


def lipkit_imports(module: str, *, top_level_only: bool = False) -> set[str]:
    """The lipkit modules `module`'s import statements run (with their packages' __init__)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        for name in _named(node, package):
            parts = name.split(".")
            found |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)} & set(MODULES)
    return found - {module}


def reached(module: str) -> set[str]:
    """Every lipkit module `module` imports anywhere, plus all that importing those runs."""
    seen, todo = set(), list(lipkit_imports(module))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += lipkit_imports(name, top_level_only=True)
    return seen


def _under(names: set[str], *roots: str) -> list[str]:
    return sorted(n for n in names if any(n == r or n.startswith(r + ".") for r in roots))


def test_file_helpers_import_nothing_of_lipkit():
    assert lipkit_imports("lipkit.files") == set()
    assert lipkit_imports("lipkit.checksums") == {"lipkit.files"}
    # beside them, the helpers that raise a LipkitError import only the error base (and YAML its parser's)
    for module in ("lipkit.utf8_text", "lipkit.writable", "lipkit.run_lock"):
        assert lipkit_imports(module) == {"lipkit.errors"}, module
    assert reached("lipkit.yaml_loader") == {"lipkit.errors", "lipkit.typed_config", "lipkit.utf8_text"}


def test_run_directory_format_does_not_import_models():
    assert _under(reached("lipkit.run_dir"), "lipkit.models", "lipkit.loading") == []
    assert "lipkit.models" in reached("lipkit.loading")  # the check can see an import of models


def test_data_imports_no_models_run_directories_or_loading():
    data = [m for m in MODULES if m == "lipkit.data" or m.startswith("lipkit.data.")]
    assert len(data) > 15
    found = {m: _under(reached(m), "lipkit.models", "lipkit.run_dir", "lipkit.loading") for m in data}
    assert {m: hit for m, hit in found.items() if hit} == {}


def test_importing_data_convert_leaves_models_unloaded():
    code = ("import sys, lipkit.data.convert; "
            "print(sorted(m for m in sys.modules if m.startswith(('lipkit.models', 'lipkit.run_dir', 'lipkit.loading'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
