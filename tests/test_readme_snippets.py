"""Every ```python block of README.md and docs/**/*.md runs as written, in a folder holding what
the blocks name (runs/xclip, bag.png and boot.png, photos/, exported/...), in the environment it
names. The convention, an HTML comment on the line right before the fence:

    (none)                        runs in .venv, where `make test` runs this file
    <!-- env: .venv-peer -->      runs in .venv-peer (open_clip), where `make test` runs it too
    <!-- not run: REASON -->      not run; the reason says why

A block that should run here fails, rather than being skipped, when a library it imports is
missing: an unmarked block may only use what .venv has."""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CORE, PEER = ".venv", ".venv-peer"
MARKER = re.compile(r"<!--\s*(env|not run)\s*:\s*(.*?)\s*-->")
FASHION = {"bag": 8, "ankle_boot": 9, "sneaker": 7}  # Fashion-MNIST class indices


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # of the opening fence
    code: str
    env: str | None  # None: not run
    reason: str  # why not, for a block that is not run
    marker: str  # the comment before the fence, verbatim ("" when none)


def pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def python_blocks(path: Path, root: Path = ROOT) -> list[Block]:
    """Every ```python block of a page, with the marker on the line before its fence."""
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    start = None
    for n, line in enumerate(lines, 1):
        if start is None and line.strip() == "```python":
            start = n
        elif start is not None and line.strip() == "```":
            before = lines[start - 2].strip() if start >= 2 else ""
            marker = before if before.startswith("<!--") else ""
            m = MARKER.fullmatch(marker) if marker else None
            env = CORE if not marker else (m.group(2) if m and m.group(1) == "env" else None)
            reason = m.group(2) if m and m.group(1) == "not run" else ""
            blocks.append(Block(str(path.relative_to(root)), start, "\n".join(lines[start:n - 1]) + "\n",
                                env, reason, marker))
            start = None
    return blocks


def all_blocks() -> list[Block]:
    return [b for p in pages() for b in python_blocks(p)]


def this_env() -> str:
    """.venv-peer when pytest runs from it (make test's second pass), else .venv."""
    return PEER if Path(sys.prefix).name == PEER else CORE


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
    """What the blocks name, built from a 3-step fashion-tiny xCLIP run and real Fashion-MNIST
    test images; the exports only where their library is installed."""
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


def test_the_pages_have_their_python_blocks():
    blocks = all_blocks()
    assert any(b.page == "README.md" and "lipkit.load(" in b.code and b.env == CORE for b in blocks)
    assert any("import_open_clip()" in b.code and b.env == PEER for b in blocks)
    assert any(b.page.startswith("docs/api/") and b.env == CORE for b in blocks)


def test_every_marker_is_one_of_the_convention(tmp_path):
    bad = [f"{b.page}:{b.line - 1}: {b.marker}" for b in all_blocks()
           if b.marker and not (b.env in (CORE, PEER) or (b.env is None and b.reason))]
    assert not bad, ("a comment before a ```python fence must be <!-- env: .venv --> or "
                     "<!-- env: .venv-peer --> or <!-- not run: REASON -->:\n" + "\n".join(bad))
    # and the parser tells the cases apart (a page written here, not the repository's)
    page = tmp_path / "p.md"
    page.write_text("```python\na = 1\n```\n<!-- env: .venv-peer -->\n```python\nb = 2\n```\n"
                    "<!-- not run: needs a GPU -->\n```python\nc = 3\n```\n<!-- env: .venv-gpu -->\n"
                    "```python\nd = 4\n```\n<!-- not run: -->\n```python\ne = 5\n```\n", encoding="utf-8")
    got = [(b.env, b.reason) for b in python_blocks(page, root=tmp_path)]
    assert got == [(CORE, ""), (PEER, ""), (None, "needs a GPU"), (".venv-gpu", ""), (None, "")]


@pytest.mark.parametrize("block", [pytest.param(b, id=f"{b.page}:{b.line}") for b in all_blocks()])
def test_a_python_block_runs_as_written(block, workspace, monkeypatch, capsys):
    if block.env is None:
        pytest.skip(f"{block.page}:{block.line} is marked not run: {block.reason}")
    if block.env != this_env():
        pytest.skip(f"{block.page}:{block.line} runs in {block.env} (`make test` runs this file there too)")
    absent = missing(block.code)
    assert not absent, (f"{block.page}:{block.line} imports {', '.join(absent)}, not installed in {block.env}: "
                        "mark the block <!-- env: ... --> with the environment that has it, or "
                        "<!-- not run: REASON -->")
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = ROOT / block.page
    exec(compile(block.code, f"{path}:{block.line}", "exec"), {"__name__": "__docs__"})  # noqa: S102 (the point)
    assert os.getcwd() == str(workspace)
    capsys.readouterr()
