"""The fast path: one message held whole in memory, parsed with a few C-level searches.

The streaming `MessageParser` takes bytes in pieces of any size, so it must cut
them at line ends, hold line breaks back and keep state between pieces. A message
of ordinary size (all but the largest; see `pipeline.WHOLE_MESSAGE_MAX`) is cheaper
to parse at once: the header block ends at the first blank line, each boundary
line is found with one `bytes.find` of the exact boundary marker, and each part's
content is decoded and hashed in one call.

The results equal `MessageParser`'s: the same entity logic (its methods are
reused: boundaries, leaves, attachments, body) on the same content bytes. Where a
message is irregular (a header block that never ends or is longer than the
streaming parser keeps, a multipart that never closes), the fast path declines and
the caller streams the message instead, so such messages need no second
implementation here.
"""

from __future__ import annotations

from typing import Optional

from mailsec.core.mailbox.message import (
    HEADER_LIMIT,
    PART_HEADER_LIMIT,
    Leaf,
    MessageParser,
    ParsedMessage,
    _parse_headers,
    blank_line,
    boundary_kind,
    header_end,
)


class WholeMessageParser(MessageParser):
    """`parse(raw)`: a ParsedMessage, or None when the message must be streamed."""

    def parse(self, raw: bytes) -> Optional[ParsedMessage]:
        end, gap = header_end(raw, 0)
        if end < 0 or end > HEADER_LIMIT:
            return None  # the streaming parser's header cap and truncation rules apply
        self.size = len(raw)
        self._top = _parse_headers(raw[:end])
        self._begin_entity(self._top)
        start = end + gap
        if not self._boundaries:
            self._take(raw, start, len(raw), strip_line_break=False)
            self._end_leaf()
            return self._result(True)
        if not self._walk_multipart(raw, start):
            return None
        return self._result(True)

    def _walk_multipart(self, raw: bytes, position: int) -> bool:
        """Walk the parts of a multipart body from `position`; False: it never closes.

        Only complete lines count (a last line without a line break is never a
        boundary line for the streaming parser either)."""
        limit = raw.rfind(b"\n", position) + 1
        content_start = position
        found: dict = {}  # marker -> its next line start (or -1), valid while >= position
        while position < limit and self._boundaries:
            if self._part_headers is not None:
                position = content_start = self._part_header_block(raw, position)
                if position < 0:
                    return False
                continue
            hit = _next_boundary_line(raw, position, limit, self._boundaries, found)
            if hit < 0:
                return False  # the multipart never reaches its closing boundary
            line_end = raw.find(b"\n", hit) + 1
            kind = boundary_kind(raw[hit:line_end], self._boundaries)
            position = line_end
            if kind is None:
                continue  # `--marker...` but not the marker: the line is content
            # the line break before a boundary belongs to the boundary (RFC 2046)
            self._take(raw, content_start, hit, strip_line_break=True)
            self._end_leaf()
            content_start = line_end
            if kind == "open":
                self._part_headers = bytearray()  # the part's header block follows
        return not self._boundaries and self._part_headers is None

    def _part_header_block(self, raw: bytes, position: int) -> int:
        """Read a part's header block at `position`; where its body starts, or -1."""
        self._part_headers = None
        if raw[position] in (10, 13):  # no header at all
            end, gap = position, (2 if raw[position] == 13 else 1)
        else:
            end, gap = blank_line(raw, position, False)
        if end < 0 or end - position > PART_HEADER_LIMIT:
            return -1  # never ends, or longer than the streaming parser keeps
        self._begin_entity(_parse_headers(raw[position:end]))
        return end + gap

    def _take(self, raw: bytes, start: int, end: int, strip_line_break: bool) -> None:
        """Feed a part's content to its leaf in one piece (when the leaf wants it)."""
        leaf: Optional[Leaf] = self._leaf
        if leaf is None or not leaf.wanted or end <= start:
            return
        if strip_line_break and not leaf.base64:
            # base64 ignores line breaks; the streaming parser drops it for the others
            if raw.startswith(b"\r\n", end - 2) and end - 2 >= start:
                end -= 2
            elif raw[end - 1] == 10:
                end -= 1
        leaf.feed(raw[start:end])


def _next_boundary_line(
    raw: bytes, position: int, limit: int, boundaries: list, found: dict
) -> int:
    """The first line start in [position, limit) beginning with `--` and an open
    boundary, or -1. `position` is a line start. Each marker's hit is remembered, so
    an outer boundary is not searched for again across every inner part."""
    best = -1
    for boundary in boundaries:
        marker = b"--" + boundary
        if raw.startswith(marker, position):
            return position
        hit = found.get(marker, -2)
        if hit == -2 or 0 <= hit < position:
            hit = raw.find(b"\n" + marker, position, limit)
            hit = hit + 1 if hit >= 0 else -1
            found[marker] = hit
        if hit >= 0 and (best < 0 or hit < best):
            best = hit
    return best


def parse_whole(raw: bytes, include_body: bool = False, body_max_bytes: int = 32 * 1024):
    """Parse one whole message: the fast path, or the streaming parser where the fast
    path declines. Both give the same ParsedMessage for the same bytes."""
    parsed = WholeMessageParser(include_body, body_max_bytes).parse(raw)
    if parsed is None:
        parser = MessageParser(include_body, body_max_bytes)
        parser.feed(raw)
        parsed = parser.close()
    return parsed
