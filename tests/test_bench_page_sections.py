"""lipkit.bench.page_sections: one benchmark rewrites its own section of docs/performance.md and
leaves every other section as it was."""
from lipkit.bench.page_sections import kept_sections, replace_section, section

PAGE = "# Performance\n\nintro\n\n## A\n\nold a\n\n## B\n\nb text\n| x |\n\n## C\n\nc text\n"


def test_replace_keeps_the_other_sections(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(PAGE)
    replace_section(page, "## B", ["new b", "", "| y |"])
    assert page.read_text() == "# Performance\n\nintro\n\n## A\n\nold a\n\n## B\n\nnew b\n\n| y |\n\n## C\n\nc text\n"


def test_replace_the_last_section_and_add_a_missing_one(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(PAGE)
    replace_section(page, "## C", ["new c"])
    assert page.read_text().endswith("## B\n\nb text\n| x |\n\n## C\n\nnew c\n")
    replace_section(page, "## D", ["d"])
    assert page.read_text().endswith("## C\n\nnew c\n\n## D\n\nd\n")
    fresh = tmp_path / "sub" / "new.md"
    replace_section(fresh, "## A", ["a"])
    assert fresh.read_text() == "# Performance\n\n## A\n\na\n"


def test_a_heading_is_matched_only_as_a_whole_line():
    text = "# P\n\nsee ## B below\n\n## Bx\n\nbx\n\n## B\n\nb\n"
    assert section(text, "## B") == "## B\n\nb\n"
    assert section(text, "## Q") is None


def test_kept_sections_in_the_order_asked(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(PAGE)
    assert kept_sections(page, ("## C", "## Q", "## A")) == "\n## C\n\nc text\n\n## A\n\nold a\n"
    assert kept_sections(tmp_path / "none.md", ("## A",)) == ""
