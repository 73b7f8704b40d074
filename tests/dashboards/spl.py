"""A small reader of the add-on's Simple XML dashboards and of the SPL in them.

There is no Splunk here: this does not run a search. It reads the `<search>`
elements of package/default/data/ui/views/*.xml, expands the add-on's own macros
(macros.conf, no arguments), splits a search into its commands at the top-level
pipes, and finds each `strptime(value, format)` call. What it cannot prove is said
in docs/operations.md ("Dashboards").
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "package" / "default"
VIEWS = DEFAULT / "data" / "ui" / "views"

# Splunk's transforming commands (Search Reference, "Command types"): they turn
# events into a results table.
TRANSFORMING = {
    "chart", "contingency", "geostats", "mstats", "rare", "stats", "timechart", "top",
    "tstats", "xyseries",
}  # fmt: skip


@dataclass
class Search:
    view: str
    id: Optional[str]
    base: Optional[str]
    query: str  # macros expanded

    @property
    def where(self) -> str:
        return f"{self.view}:{self.id or self.base or 'panel'}"


def read_conf(path: Path) -> dict[str, dict[str, str]]:
    """A .conf file: stanzas of `key = value`, `\\` at a line's end continuing it."""
    stanzas: dict[str, dict[str, str]] = {}
    current: Optional[dict[str, str]] = None
    key = None
    for line in path.read_text().splitlines():
        if key is not None and current is not None:  # a continued value
            current[key] += "\n" + line.rstrip("\\")
            key = key if line.endswith("\\") else None
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stanzas.setdefault(stripped[1:-1], {})
            continue
        name, _, value = stripped.partition("=")
        if current is not None:
            current[name.strip()] = value.strip().rstrip("\\")
            key = name.strip() if value.rstrip().endswith("\\") else None
    return stanzas


def macros() -> dict[str, str]:
    return {name: s["definition"] for name, s in read_conf(DEFAULT / "macros.conf").items()}


def expand(query: str, known: dict[str, str]) -> str:
    for _ in range(10):  # macros inside macros
        expanded = re.sub(r"`(\w+)`", lambda m: known.get(m.group(1), m.group(0)), query)
        if expanded == query:
            return expanded
        query = expanded
    return query


def searches() -> list[Search]:
    known = macros()
    found = []
    for view in sorted(VIEWS.glob("*.xml")):
        for element in ET.parse(view).getroot().iter("search"):
            query = element.findtext("query")
            if query is None:
                continue
            found.append(
                Search(view.stem, element.get("id"), element.get("base"), expand(query, known))
            )
    return found


def _top_level_split(text: str, separator: str) -> list[str]:
    """Split at `separator` outside quotes, (), [] (subsearches) and {}."""
    parts, depth, quote, start, i = [], 0, None, 0, 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = None
        elif char == '"':
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def commands(query: str) -> list[str]:
    """The command names of a search, in order: its first part is the implicit
    `search`, unless the search starts with a pipe (a generating command)."""
    names = []
    for index, part in enumerate(_top_level_split(query.strip(), "|")):
        words = part.split()
        if words:
            names.append("search" if index == 0 else words[0])
    return names


def is_transforming(query: str) -> bool:
    return any(name in TRANSFORMING for name in commands(query))


def strptime_calls(text: str) -> list[tuple[str, str]]:
    """(value expression, format) of every strptime(...) call in an SPL text."""
    calls = []
    for match in re.finditer(r"\bstrptime\(", text):
        start = match.end()
        depth, quote, i = 1, None, start
        while i < len(text) and depth:
            char = text[i]
            if quote:
                if char == "\\":
                    i += 1
                elif char == quote:
                    quote = None
            elif char == '"':
                quote = char
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
            i += 1
        arguments = _top_level_split(text[start : i - 1], ",")
        value, fmt = ",".join(arguments[:-1]).strip(), arguments[-1].strip()
        calls.append((value, fmt.strip('"') if fmt.startswith('"') else fmt))
    return calls


def literal_part(fmt: str) -> str:
    """A time format with its %-directives (%Y, %6N, %z, ...) taken out."""
    return re.sub(r"%\d*[A-Za-z%]", "", fmt)


def aggregation_outputs(query: str) -> set[str]:
    """The fields the last stats of a search leaves: its `as` names and `by` fields."""
    last = [p for p in _top_level_split(query, "|") if p.split()[:1] == ["stats"]][-1]
    clause, _, by = last.partition(" by ")
    named = set(re.findall(r"\bas\s+(\w+)", clause))
    return named | set(re.findall(r"\w+", by))


def fields_used(query: str) -> set[str]:
    """Fields a post-process search reads: aggregation arguments and `by` fields."""
    used = set(re.findall(r"\b(?:count|dc|sum|max|min|avg|latest|values)\((\w+)\)", query))
    for by in re.findall(r"\bby\s+([\w, ]+?)(?=\s*(?:\||$|\w+=))", query):
        used |= set(re.findall(r"\w+", by))
    return used
