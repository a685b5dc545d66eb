"""The documentation's promises that `make docs` (mkdocs build --strict) does not check itself:
the README stays short and maps every guide, every public name of every package face is on an
API page, the pages name no private module, the demo table is the same on the README and the
site's home page, and the docs tools are pinned alike in requirements-docs.txt and the `docs`
extra. Reads files only (no torch, no mkdocs)."""
from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
API = ROOT / "docs" / "api"
DIRECTIVE = re.compile(r"^::: *([\w.]+) *\n((?:[ \t]+.*\n)*)", re.MULTILINE)


def faces() -> dict[str, dict[str, str]]:
    """{package: {public name: home submodule}} from every `_HOMES` table under src/lipkit."""
    out = {}
    for init in sorted((SRC / "lipkit").rglob("__init__.py")):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_HOMES" for t in node.targets):
                package = ".".join(init.parent.relative_to(SRC).parts)
                out[package] = ast.literal_eval(node.value)
    return out


def directives(text: str) -> dict[str, list[str] | None]:
    """{`::: identifier`: its `members` list, None when all its public members are shown}."""
    out = {}
    for ident, body in DIRECTIVE.findall(text):
        options = (yaml.safe_load(body) or {}).get("options", {}) if body.strip() else {}
        members = options.get("members")
        out[ident] = None if members is None or members is True else list(members or [])
    return out


def api_directives() -> dict[str, list[str] | None]:
    out = {}
    for page in sorted(API.glob("*.md")):
        out.update(directives(page.read_text(encoding="utf-8")))
    return out


def undocumented(homes: dict[str, dict[str, str]], shown: dict[str, list[str] | None]) -> list[str]:
    """Public names that no `:::` directive shows: `pkg.home` with the name among its members (or
    all of them), or `pkg.home.name` itself; a name that is its own home is a module."""
    gone = []
    for package, table in homes.items():
        for name, home in table.items():
            module = f"{package}.{home}"
            if home == name:
                ok = module in shown or any(k.startswith(module + ".") for k in shown)
            else:
                members = shown.get(module, [])
                ok = f"{module}.{name}" in shown or (module in shown and (members is None or name in members))
            if not ok:
                gone.append(f"{package}.{name} (defined in {module})")
    return gone


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/guides/"


def test_every_public_name_of_every_package_face_is_on_an_api_page():
    homes = faces()
    assert {"lipkit", "lipkit.eval", "lipkit.objectives", "lipkit.models", "lipkit.runs"} <= set(homes)
    shown = api_directives()
    assert undocumented(homes, shown) == []
    # the check itself: a name taken out of a members list, or a module's directive removed, is caught
    planted = dict(shown, **{"lipkit.runs.loading": ["load_model"]})
    assert "lipkit.load (defined in lipkit.runs.loading)" in undocumented(homes, planted)
    assert "lipkit.eval.knn (defined in lipkit.eval.knn)" in undocumented(
        homes, {k: v for k, v in shown.items() if k != "lipkit.eval.knn"})


def test_the_issue_s_named_api_is_there():
    shown = api_directives()
    assert "load" in shown["lipkit.runs.loading"]
    assert {"encode_image", "encode_text", "forward"} <= set(shown["lipkit.models.lip.LIPModel"])
    assert {"build_objective", "available_objectives"} <= set(shown["lipkit.objectives.registry"])
    assert shown["lipkit.objectives.registration"] == ["register"]
    tasks = [n for n, h in faces()["lipkit.eval"].items() if n == h]
    assert len(tasks) >= 8
    assert all("evaluate" in shown[f"lipkit.eval.{t}"] for t in tasks)
    assert {"load_config", "save_config"} <= set(shown["lipkit.config"])
    for module in ("config", "objective_config"):  # every config dataclass, each on its own
        tree = ast.parse((SRC / "lipkit" / f"{module}.py").read_text(encoding="utf-8"))
        classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef) and not n.name.startswith("_")]
        assert len(classes) >= 8
        assert [c for c in classes if f"lipkit.{module}.{c}" not in shown] == []


def test_the_api_pages_name_no_private_module():
    private = [k for k in api_directives() if any(part.startswith("_") for part in k.split("."))]
    assert private == []


def test_the_demo_table_is_the_same_on_the_readme_and_the_home_page():
    def table(path: Path) -> list[str]:
        rows = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.startswith("| clip ")
                or ln.startswith("| xclip ") or ln.startswith("| objective ")]
        assert len(rows) == 3, path
        return rows
    assert table(ROOT / "README.md") == table(ROOT / "docs" / "index.md")


def nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for v in node.values() for p in nav_pages(v)]
    return [p for v in node for p in nav_pages(v)]


def mkdocs_config() -> dict:
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    return yaml.load(text, Loader=yaml.BaseLoader)  # plain strings; no !!python tags are used


def test_the_readme_maps_every_guide_and_measured_page_of_the_site():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    nav = mkdocs_config()["nav"]
    sections = {k: v for item in nav for k, v in item.items()}
    pages = nav_pages(sections["Guides"]) + nav_pages(sections["Measured results"])
    assert len(pages) >= 15
    unlinked = [p for p in pages if f"](docs/{p})" not in readme]
    assert unlinked == []
    assert "](docs/api/index.md)" in readme


def test_the_docs_tools_are_pinned_alike():
    pins = {}
    for line in (ROOT / "requirements-docs.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"requirements-docs.txt: {line!r} is not pinned with =="
            pins[name.lower()] = version
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]["docs"]
    assert extra, "the docs extra is empty"
    for requirement in extra:
        name, _, version = requirement.partition("==")
        assert pins.get(name.lower()) == version, f"{requirement} vs requirements-docs.txt"


def slug(heading: str) -> str:
    """A heading's anchor as MkDocs' toc (and, for these headings, GitHub) writes it."""
    text = re.sub(r"[^\w\s-]", "", re.sub(r"`", "", heading)).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    lines, inside = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        inside ^= line.strip().startswith("```")
        if not inside and line.startswith("#"):
            lines.append(slug(line.lstrip("#")))
    return set(lines)


def test_the_readme_s_links_reach_their_pages_and_headings():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(((?!https?:)[^)#\s]+)(?:#([^)\s]+))?\)", readme)
    assert len(links) >= 20
    broken = []
    for target, anchor in links:
        page = ROOT / target
        if not page.is_file():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in anchors(page):
            broken.append(f"{target}#{anchor}: no such heading")
    assert broken == []
    assert slug("Large batches on small hardware: accumulation by feature cache") == \
        "large-batches-on-small-hardware-accumulation-by-feature-cache"
