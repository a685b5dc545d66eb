"""The import layers (DESIGN.md, Principles and Contracts → Loading), read from the source.

- The import graph of src/lipkit has no cycle: module-level and function-level imports, read
  statically, plus each package face's lazy table (`_HOMES`, lipkit.faces), whose names are
  imported on first use. `from package import name` is an edge to the submodule `name` when there
  is one, else to the package.
- The floors: the file helpers import nothing of lipkit; models never import the runs layer; data
  imports none of models or runs; interop never imports bench.
An import inside a function counts, and so does whatever a module's own imports run when it is
imported (their packages' `__init__` included)."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lipkit

SRC = Path(lipkit.__file__).parent


def module_paths(src: Path) -> dict[str, Path]:
    return {".".join(("lipkit", *p.relative_to(src).with_suffix("").parts)).removesuffix(".__init__"): p
            for p in src.rglob("*.py")}


MODULES = module_paths(SRC)


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rsplit(".", 1)[0]


def _named(node: ast.AST, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
        module = ".".join(base + ([node.module] if node.module else []))
        return [module] + [f"{module}.{a.name}" for a in node.names]  # `from lipkit import run_dir`
    return []


def _face_homes(tree: ast.Module, package: str) -> list[str]:
    """The submodules a lazy package face (`_HOMES = {...}`) imports on first use."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_HOMES" for t in node.targets):
            return [f"{package}.{v.value}" for v in node.value.values if isinstance(v, ast.Constant)]
    return []


def lipkit_imports(module: str, *, top_level_only: bool = False) -> set[str]:
    """The lipkit modules `module`'s import statements run (with their packages' __init__)."""
    path = MODULES[module]
    package = _package(module, path)
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


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def import_graph(src: Path) -> dict[str, set[str]]:
    """module -> the modules it names in any import (the most specific module each names), and a
    lazy face's homes."""
    modules = module_paths(src)
    graph = {}
    for module, path in modules.items():
        package = _package(module, path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges = set(_face_homes(tree, package)) if path.name == "__init__.py" else set()
        for node in ast.walk(tree):
            names = _named(node, package)
            if isinstance(node, ast.ImportFrom):
                edges |= {name if name in modules else names[0] for name in names[1:]}
            else:  # `import a.b.c`: the longest of a.b.c, a.b that is a module
                edges |= {next((p for p in _prefixes(name) if p in modules), "") for name in names}
        graph[module] = (edges & set(modules)) - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _under(names: set[str], *roots: str) -> list[str]:
    return sorted(n for n in names if any(n == r or n.startswith(r + ".") for r in roots))


def test_import_graph_has_no_cycle():
    graph = import_graph(SRC)
    assert len(graph) > 150 and "lipkit.runs.loading" in graph["lipkit.runs"]  # faces' homes are edges
    assert "lipkit.models" in graph["lipkit.runs.loading"]  # the check sees an import of a package face
    assert cycles(graph) == []


@pytest.mark.parametrize("planted", [
    ("models/heads.py", "\n\ndef _planted():\n    from lipkit.runs.loading import load  # noqa: F401\n"),
    ("eval/splits.py", "\nfrom .zeroshot import evaluate  # noqa: E402,F401\n"),
])
def test_cycle_check_finds_a_planted_cycle(tmp_path, planted):
    tree = tmp_path / "lipkit"
    shutil.copytree(SRC, tree, ignore=shutil.ignore_patterns("__pycache__"))
    file, line = planted
    with open(tree / file, "a", encoding="utf-8") as f:
        f.write(line)
    found = cycles(import_graph(tree))
    assert len(found) == 1 and "lipkit." + file.removesuffix(".py").replace("/", ".") in found[0]


def test_cycle_finder_on_a_hand_made_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": {"e"}, "f": {"a"}}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["e", "e2"]]


def test_file_helpers_import_nothing_of_lipkit():
    for module in ("lipkit.files", "lipkit.faces", "lipkit.moved"):
        assert lipkit_imports(module) == set(), module
    assert lipkit_imports("lipkit.runs.checksums") == {"lipkit.files"}
    # beside them, the helpers that raise a LipkitError import only the error base (and YAML its parser's)
    for module in ("lipkit.utf8_text", "lipkit.writable", "lipkit.runs.lock"):
        assert lipkit_imports(module) == {"lipkit.errors"}, module
    assert reached("lipkit.yaml_loader") == {"lipkit.errors", "lipkit.typed_config", "lipkit.utf8_text"}


def test_models_never_import_the_runs_layer():
    models = [m for m in MODULES if m == "lipkit.models" or m.startswith("lipkit.models.")]
    assert len(models) > 8
    found = {m: _under(reached(m), "lipkit.runs") for m in models}
    assert {m: hit for m, hit in found.items() if hit} == {}
    assert "lipkit.models" in reached("lipkit.runs.loading")  # the check can see an import of models


def test_run_directory_format_does_not_import_models():
    assert _under(reached("lipkit.runs.directory"), "lipkit.models", "lipkit.runs.loading") == []


def test_data_imports_no_models_or_runs():
    data = [m for m in MODULES if m == "lipkit.data" or m.startswith("lipkit.data.")]
    assert len(data) > 15
    found = {m: _under(reached(m), "lipkit.models", "lipkit.runs") for m in data}
    assert {m: hit for m, hit in found.items() if hit} == {}


def test_interop_never_imports_bench():
    interop = [m for m in MODULES if m == "lipkit.interop" or m.startswith("lipkit.interop.")]
    found = {m: _under(reached(m), "lipkit.bench") for m in interop}
    assert {m: hit for m, hit in found.items() if hit} == {}


def test_open_clip_is_imported_only_through_the_gateway():
    importers = sorted(m for m, path in MODULES.items() if any(
        name == "open_clip" or name.startswith("open_clip.")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) for name in _named(node, "")))
    assert importers == ["lipkit.interop.gateway"]


def test_every_package_face_is_lazy():
    """Each package's `__init__` is a docstring and a lazy table (or nothing): no eager import."""
    for module, path in MODULES.items():
        if path.name != "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert all(isinstance(n, ast.ImportFrom) and n.module == "lipkit.faces" for n in imports), module


def test_faces_resolve_every_name():
    import importlib

    for module, path in MODULES.items():
        if path.name == "__init__.py":
            package = importlib.import_module(module)
            for name in getattr(package, "_HOMES", {}):
                assert getattr(package, name) is not None, f"{module}.{name}"


def test_eval_face_names_every_task():
    from lipkit.eval import _HOMES
    from lipkit.eval.registry import TASKS

    assert {name: _HOMES.get(name) for name in TASKS} == {name: name for name in TASKS}


def test_old_import_paths_work_for_one_release():
    from lipkit.runs.directory import list_checkpoints

    with pytest.warns(DeprecationWarning, match=r"lipkit.run_dir.list_checkpoints moved to lipkit.runs.directory"):
        from lipkit.run_dir import list_checkpoints as old
    assert old is list_checkpoints
    with pytest.warns(DeprecationWarning, match=r"PeerUnavailable moved to lipkit.interop.gateway.OpenClipUnavailable"):
        from lipkit.bench.peer import PeerUnavailable
    from lipkit.interop.gateway import OpenClipUnavailable

    assert PeerUnavailable is OpenClipUnavailable


def test_lip_model_points_to_the_runs_layer(tmp_path):
    from lipkit.errors import LipkitError
    from lipkit.models import LIPModel

    with pytest.raises(LipkitError, match=r"use lipkit.load\("):
        LIPModel.from_pretrained(tmp_path)


def test_importing_data_convert_leaves_models_unloaded():
    code = ("import sys, lipkit.data.convert; "
            "print(sorted(m for m in sys.modules if m.startswith(('lipkit.models', 'lipkit.runs'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_importing_lipkit_and_the_cli_loads_no_torch():
    code = "import sys, lipkit, lipkit.cli, lipkit.eval, lipkit.data.builtins; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
