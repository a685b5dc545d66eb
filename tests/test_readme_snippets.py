"""Every ```python block of the README runs as written, in a folder holding what the blocks name
(runs/xclip, bag.png and boot.png, photos/, exported/...), wherever the libraries it imports are
installed: the lipkit blocks in .venv, the open_clip one in .venv-peer (`make test` runs this
file in both). A block whose library is missing here is skipped, saying which."""
from __future__ import annotations

import ast
import importlib.util
import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FASHION = {"bag": 8, "ankle_boot": 9, "sneaker": 7}  # Fashion-MNIST class indices


def python_blocks() -> list[tuple[int, str]]:
    """(line of the opening fence, code) of each ```python block."""
    blocks, lines = [], README.read_text(encoding="utf-8").splitlines()
    start = None
    for n, line in enumerate(lines, 1):
        if start is None and line.strip() == "```python":
            start = n
        elif start is not None and line.strip() == "```":
            blocks.append((start, "\n".join(lines[start:n - 1]) + "\n"))
            start = None
    return blocks


def needs(code: str) -> set[str]:
    """The top-level packages a block imports (open_clip too when it goes through the gateway)."""
    out = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module.split(".")[0])
    if re.search(r"\bimport_open_clip\(", code):
        out.add("open_clip")
    return out


def missing(code: str) -> list[str]:
    return sorted(p for p in needs(code) if importlib.util.find_spec(p) is None)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """What the README's blocks name, built from a 3-step fashion-tiny xCLIP run and real
    Fashion-MNIST test images; the exports only where their library is installed."""
    from PIL import Image

    from _interop_data import tiny_run
    from lipkit.data import load_fashion_mnist

    root = tmp_path_factory.mktemp("readme")
    tiny_run(root / "runs" / "xclip", "objective.name=xclip")
    images, labels = load_fashion_mnist("test")
    for name, label in FASHION.items():
        picked = [images[i] for i in range(len(labels)) if labels[i] == label][:4]
        for k, a in enumerate(picked):
            (root / "photos" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(root / "photos" / name / f"{k}.png")
    Image.fromarray(images[list(labels).index(8)]).save(root / "bag.png")
    Image.fromarray(images[list(labels).index(9)]).save(root / "boot.png")
    if importlib.util.find_spec("transformers") and importlib.util.find_spec("open_clip"):
        from lipkit.interop.export import export_run

        export_run(root / "runs" / "xclip", "hf", root / "exported" / "xclip-hf")
        export_run(root / "runs" / "xclip", "open_clip", root / "exported" / "xclip-open_clip")
    return root


def test_the_readme_has_its_python_blocks():
    blocks = python_blocks()
    assert len(blocks) >= 3
    assert any("lipkit.load(" in code for _, code in blocks)
    assert any("import_open_clip()" in code for _, code in blocks)


@pytest.mark.parametrize("line, code", [pytest.param(n, c, id=f"README.md:{n}") for n, c in python_blocks()])
def test_a_readme_python_block_runs_as_written(line, code, workspace, monkeypatch, capsys):
    absent = missing(code)
    if absent:
        pytest.skip(f"README.md:{line} imports {', '.join(absent)}, not installed here "
                    "(open_clip lives in .venv-peer: `make test` runs this file there too)")
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    exec(compile(code, f"{README}:{line}", "exec"), {"__name__": "__readme__"})  # noqa: S102 (the point)
    assert os.getcwd() == str(workspace)
    capsys.readouterr()
