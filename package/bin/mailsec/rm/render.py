"""`include_results = table`: the first rows of the search results, appended to the
text body as an aligned plain-text table and to the HTML body as an escaped table."""

from __future__ import annotations

import csv
import gzip
import html
import sys
from dataclasses import dataclass
from typing import Optional

MV_PREFIX = "__mv_"
MAX_CELL_WIDTH = 60  # wider cells are not cut, they only stop widening their column


@dataclass(frozen=True)
class ResultTable:
    columns: list[str]
    rows: list[list[str]]
    total_rows: int  # rows in the results file, of which `rows` are the first


def _decode_mv(text: str) -> list[str]:
    """`$a$;$b$$c$` -> ["a", "b$c"] (splunkd's multivalue encoding)."""
    values, current, i = [], [], 1
    while i < len(text):
        char = text[i]
        if char == "$" and text[i + 1 : i + 2] == "$":
            current.append("$")
            i += 2
        elif char == "$":
            values.append("".join(current))
            current = []
            i += 3  # the closing "$", the ";" and the next opening "$"
        else:
            current.append(char)
            i += 1
    return values


def _shown(column: str) -> bool:
    # splunkd's internal fields (_raw and _time aside) mean nothing in a mail
    return not column.startswith(MV_PREFIX) and (
        not column.startswith("_") or column in ("_time", "_raw")
    )


def read_results(path: Optional[str], max_rows: int) -> Optional[ResultTable]:
    """Read the first `max_rows` rows of a gzipped results CSV; None if there is none."""
    if not path:
        return None
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        columns = [c for c in header if _shown(c)]
        rows, total = [], 0
        for record in reader:
            total += 1
            if len(rows) >= max_rows:
                continue
            row = []
            for column in columns:
                encoded = record.get(MV_PREFIX + column) or ""
                values = _decode_mv(encoded) if encoded.startswith("$") else None
                row.append(", ".join(values) if values else (record.get(column) or ""))
            rows.append(row)
    return ResultTable(columns, rows, total)


def _caption(table: ResultTable) -> str:
    if table.total_rows > len(table.rows):
        return f"First {len(table.rows)} of {table.total_rows} results"
    return f"{table.total_rows} result" + ("" if table.total_rows == 1 else "s")


def as_text(table: ResultTable) -> str:
    if not table.columns:
        return _caption(table) + "\n"
    widths = [min(MAX_CELL_WIDTH, len(c)) for c in table.columns]
    cells = [[cell.replace("\r", " ").replace("\n", " ") for cell in row] for row in table.rows]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], min(MAX_CELL_WIDTH, len(cell)))

    def line(values: list[str]) -> str:
        return " | ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

    out = [_caption(table) + ":", "", line(table.columns)]
    out.append("-+-".join("-" * w for w in widths))
    out.extend(line(row) for row in cells)
    return "\n".join(out) + "\n"


def as_html(table: ResultTable) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in table.rows
    )
    return (
        f"<p>{esc(_caption(table))}</p>"
        '<table border="1" cellpadding="4" cellspacing="0">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def append_table(
    text: Optional[str], html_body: Optional[str], table: ResultTable
) -> tuple[Optional[str], Optional[str]]:
    """The bodies with the table appended to each body that is set.

    A body that is not set stays unset: an HTML part holding only the table would
    hide the text part in most mail clients. With neither set, both get the table.
    """
    if not text and not html_body:
        return as_text(table), as_html(table)
    text_out = f"{text}\n\n{as_text(table)}" if text else text
    html_out = f"{html_body}\n{as_html(table)}" if html_body else html_body
    return text_out, html_out
