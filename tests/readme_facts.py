"""Were any facts lost when a README was cut into pages? Every number, date, inline code span
and code-block line (the command part of a shell line, without its trailing comment) of an old
README must appear somewhere in the new pages (README.md and docs/**/*.md). Whitespace is
normalised; a wrapped code span matches its one-line form.

    git show HEAD:README.md > /tmp/old-readme.md
    .venv/bin/python tests/readme_facts.py /tmp/old-readme.md    # exit 1, listing what is missing

Not a test: once the split is committed, the old README is history and its numbers may be
re-measured on purpose. It was run once, on the README of 1bbe140 (issue 29)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?(?![\w])")
DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
CODE_SPAN = re.compile(r"`([^`]+)`")


def squash(text: str) -> str:
    return " ".join(text.split())


def code_blocks(text: str) -> tuple[list[tuple[str, str]], str]:
    """([(language, line)] of every fenced block line, the text outside the fences)."""
    lines, prose, lang = [], [], None
    for line in text.splitlines():
        fence = line.strip().startswith("```")
        if lang is None and fence:
            lang = line.strip()[3:].strip() or "text"
        elif lang is not None and fence:
            lang = None
        elif lang is not None:
            lines.append((lang, line))
        else:
            prose.append(line)
    return lines, "\n".join(prose)


def facts(text: str) -> dict[str, set[str]]:
    block_lines, prose = code_blocks(text)
    commands = set()
    for lang, line in block_lines:
        if lang == "bash":
            line = re.sub(r"\s#.*$", "", line) if not line.lstrip().startswith("#") else ""
        if squash(line):
            commands.add(squash(line))
    spans = {squash(s) for s in CODE_SPAN.findall(re.sub(r"\s*\n\s*", " ", prose)) if squash(s)}
    return {"numbers": set(NUMBER.findall(text)), "dates": set(DATE.findall(text)),
            "code spans": spans, "code-block lines": commands}


def new_pages(root: Path = ROOT) -> str:
    paths = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return "\n".join(p.read_text(encoding="utf-8") for p in paths)


def lost(old: str, new: str) -> dict[str, list[str]]:
    have = facts(new)
    flat = squash(new)
    missing = {}
    for kind, items in facts(old).items():
        pool = have[kind] if kind in ("numbers", "dates") else None
        gone = [x for x in sorted(items) if (x not in pool if pool is not None else x not in flat)]
        if gone:
            missing[kind] = gone
    return missing


def main(argv: list[str]) -> int:
    old = Path(argv[0]).read_text(encoding="utf-8")
    counts = {k: len(v) for k, v in facts(old).items()}
    missing = lost(old, new_pages())
    for kind, items in missing.items():
        print(f"{kind}: {len(items)} missing")
        for x in items:
            print(f"  {x}")
    print(", ".join(f"{counts[k] - len(missing.get(k, []))}/{counts[k]} {k}" for k in counts) + " found in the new pages")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
