"""A lean RFC 5322 header block reader, with MIME parameters (RFC 2045/2231).

`email.feedparser` builds a whole Message object per part and re-parses
parameters on every access: at millions of messages it costs more than gpg's
decryption. This reader unfolds and splits a header block once and parses the
few MIME parameters the splitter needs (boundary, charset, filename/name).
8-bit header bytes are read as UTF-8 (RFC 6532); invalid bytes become U+FFFD.
"""

from __future__ import annotations

import re
from typing import Optional
from urllib.parse import unquote

_UNFOLD = re.compile(r"\r?\n(?=[ \t])")
_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_SECTION = re.compile(r"^(?P<name>[^*]+)(?:\*(?P<index>\d+))?(?P<encoded>\*)?$")


class Headers:
    """Header fields in order; names compared case-insensitively."""

    __slots__ = ("_fields",)

    def __init__(self, fields: list) -> None:
        self._fields = fields  # [(lowercase name, value)]

    @classmethod
    def parse(cls, block: bytes) -> Headers:
        text = _UNFOLD.sub("", block.decode("utf-8", "replace"))
        fields = []
        for line in text.split("\n"):
            name, colon, value = line.partition(":")
            if colon and name and " " not in name.rstrip():
                fields.append((name.strip().lower(), value.strip()))
        return cls(fields)

    def get(self, name: str, default: str = "") -> str:
        for key, value in self._fields:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list:
        return [value for key, value in self._fields if key == name]

    def content_type(self) -> str:
        value = self.get("content-type").split(";", 1)[0].strip().lower()
        return value if "/" in value else "text/plain"

    def param(self, header: str, name: str) -> Optional[str]:
        return mime_params(self.get(header)).get(name)


def mime_params(value: str) -> dict:
    """Parameters of a structured header value, RFC 2231 sections and charsets joined."""
    if ";" not in value:
        return {}
    plain: dict = {}
    sections: dict = {}
    for raw_name, raw_value in _PARAM.findall(value):
        name = raw_name.lower()
        text = raw_value.strip()
        if len(text) >= 2 and text[0] == text[-1] == '"':
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        match = _SECTION.match(name)
        if match and (match["index"] is not None or match["encoded"]):
            index = int(match["index"] or 0)
            sections.setdefault(match["name"], {})[index] = (text, bool(match["encoded"]))
        else:
            plain[name] = text
    for name, parts in sections.items():
        charset = "utf-8"
        pieces = []
        for index in sorted(parts):
            text, encoded = parts[index]
            if encoded and index == 0 and text.count("'") >= 2:
                charset, _language, text = text.split("'", 2)
            pieces.append(_percent_decode(text, charset or "utf-8") if encoded else text)
        plain[name] = "".join(pieces)
    return plain


def _percent_decode(text: str, charset: str) -> str:
    try:
        return unquote(text, encoding=charset, errors="replace")
    except (LookupError, ValueError):  # an unknown charset name, or one holding a NUL
        return unquote(text, encoding="utf-8", errors="replace")
