"""The README is an entry page, and every relative link in it and in docs/*.md leads somewhere: to
a file of the repository and, when it names one, to a heading of that page (GitHub's anchors)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 150
FIRST_SCREEN = 40  # lines: where a new operator must learn how to point the playbooks at their hosts

HOST_GUIDES = ("inventory/examples/systemd.yml", "inventory/examples/seed_layout.yml", "docs/hosts.md")

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def links(text: str) -> list[str]:
    """The targets of the Markdown links of a page, outside code blocks and inline code."""
    prose = re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))
    return LINK.findall(prose)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE)}


def broken_links(page: Path, root: Path = ROOT, allowed: frozenset[str] = frozenset()) -> list[str]:
    problems = []
    for target in links(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not checked here
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page.resolve()
        relative = resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else str(resolved)
        where = f"{page.relative_to(root)}: ({target})"
        if not resolved.is_relative_to(root):
            problems.append(f"{where} leaves the repository")
        elif not resolved.exists():
            if relative not in allowed:
                problems.append(f"{where}: no file {relative}")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{where}: {relative} has no heading with the anchor #{fragment}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_leads_to_a_file_and_heading_of_the_repository(page):
    assert broken_links(page) == []


def test_a_missing_file_or_heading_is_reported_and_code_is_not_read_as_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("# A page\n\n## Large fleets\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/there.md#large-fleets) [gone](docs/gone.md) [bad](docs/there.md#nothing)\n"
                    "[up](../outside.md) [web](https://example.com/x) `[code](docs/no.md)`\n"
                    "```\n[fenced](docs/no.md)\n```\n[later](docs/hosts.md)\n", encoding="utf-8")
    assert broken_links(page, tmp_path, frozenset({"docs/hosts.md"})) == [
        "README.md: (docs/gone.md): no file docs/gone.md",
        "README.md: (docs/there.md#nothing): docs/there.md has no heading with the anchor #nothing",
        "README.md: (../outside.md) leaves the repository",
    ]


def test_the_readme_is_an_entry_page_whose_first_screen_says_how_to_describe_your_hosts():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move the detail to docs/"
    first_screen = "\n".join(lines[:FIRST_SCREEN])
    for needed in ("scripts/demo", "scripts/test", *HOST_GUIDES, "riskmgr_db_path",
                   "riskmgr_service_manager"):
        assert needed in first_screen, f"{needed} is not in the README's first {FIRST_SCREEN} lines"
