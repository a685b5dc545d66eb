"""Sections of a Markdown results page (docs/performance.md) that separate benchmarks own: one
benchmark rewrites its own `## heading` section and leaves the rest of the page as it was."""
from __future__ import annotations

from pathlib import Path


def _span(text: str, heading: str) -> tuple[int, int] | None:
    """Where the section under `heading` starts and ends (the next `## ` heading, or the end)."""
    if text.startswith(heading + "\n"):
        start = 0
    else:
        start = text.find("\n" + heading + "\n")
        if start < 0:
            return None
        start += 1
    end = text.find("\n## ", start + len(heading))
    return start, end + 1 if end >= 0 else len(text)


def section(text: str, heading: str) -> str | None:
    """The section under `heading`, heading line included, or None when the page has none."""
    span = _span(text, heading)
    return None if span is None else text[span[0]:span[1]].rstrip("\n") + "\n"


def replace_section(page: Path, heading: str, body: list[str]) -> None:
    """Write `heading` and its `body` lines into `page`: in place of that section when the page has
    one, else at the end. A page that does not exist yet starts as `# Performance`."""
    text = page.read_text(encoding="utf-8") if page.is_file() else "# Performance\n"
    block = "\n".join([heading, "", *body]).rstrip("\n") + "\n"
    span = _span(text, heading)
    if span is None:
        text = text.rstrip("\n") + "\n\n" + block
    else:
        after = text[span[1]:]
        text = text[:span[0]] + block + ("\n" + after if after else "")
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text, encoding="utf-8")
    print(f"wrote {page} ({heading})")


def kept_sections(page: Path, headings: tuple[str, ...]) -> str:
    """The sections under `headings` of `page` as it is now, each preceded by a blank line, to append
    to a page that is about to be rewritten."""
    text = page.read_text(encoding="utf-8") if page.is_file() else ""
    return "".join("\n" + s for s in (section(text, h) for h in headings) if s is not None)
