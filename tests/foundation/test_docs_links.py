"""The README and docs/ hold together: every relative link resolves (anchors included),
and every input, alert action and sourcetype the README names has a page that names it
(docs/development.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
_SOURCETYPE = re.compile(r"`([a-z0-9_]+(?::[a-z0-9_]+)+)`")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(text: str) -> str:
    """The text without fenced blocks and code spans, where a `[x](y)` is not a link."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = heading.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in _LINK.findall(prose(path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor})")
    return broken


def declared_parts() -> set[str]:
    """Inputs and alert actions globalConfig.json declares."""
    config = json.loads((ROOT / "globalConfig.json").read_text(encoding="utf-8"))
    services = config["pages"].get("inputs", {}).get("services", [])
    return {s["name"] for s in services} | {a["name"] for a in config.get("alerts", [])}


def readme_parts() -> set[str]:
    """The parts in the first column of the README's table of parts."""
    return set(re.findall(r"^\| `([a-z_]+)` \|", README.read_text(encoding="utf-8"), re.M))


def named_in_docs(name: str) -> list[Path]:
    return [p for p in DOCS.glob("*.md") if f"`{name}`" in p.read_text(encoding="utf-8")]


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page) == []


def test_readme_table_lists_every_declared_part() -> None:
    assert declared_parts() <= readme_parts()


def test_every_declared_part_has_its_page() -> None:
    missing = sorted(p for p in declared_parts() if not (DOCS / f"{p}.md").exists())
    assert missing == []


def test_every_part_and_sourcetype_named_in_readme_has_a_page() -> None:
    names = readme_parts() | set(_SOURCETYPE.findall(README.read_text(encoding="utf-8")))
    assert names, "the README names no part and no sourcetype"
    assert sorted(n for n in names if not named_in_docs(n)) == []


def test_checker_catches_a_broken_link_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading: yes\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-code-heading-yes) [gone](missing.md) [bad](other.md#nope)\n"
        "`[not a link](missing.md)` [web](https://example.invalid/x)\n"
    )
    assert broken_links(page) == ["missing.md (no such file)", "other.md#nope (no heading #nope)"]
