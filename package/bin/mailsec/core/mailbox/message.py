"""A streaming, memory-bounded parser for one RFC 5322 / MIME message.

Bytes are pushed in (``feed``) as the mbox splitter produces them. Only the header
blocks (capped), the boundary stack and the text body (up to ``body_max_bytes``,
only when asked) are kept; attachments are decoded and hashed as they stream by,
so a 2 GB attachment costs no more memory than a 2 KB one.

Header values are decoded with ``email.header.decode_header`` + ``make_header``:
``email.policy.default`` puts a space between adjacent RFC 2047 encoded words of a
display name, which RFC 2047 forbids. Invalid bytes and unknown charsets are
replaced, never fatal.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from dataclasses import dataclass, field
from datetime import timezone
from email.header import decode_header, make_header
from email.utils import parsedate_to_datetime
from typing import Any, Optional

from mailsec.core.mailbox.base64fast import decode_lines
from mailsec.core.mailbox.headers import Headers, mime_params

HEADER_LIMIT = 1 << 20  # a header block beyond 1 MiB is cut (the rest is skipped)
PART_HEADER_LIMIT = 64 << 10
_WHITESPACE = b" \t\r\n"
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_SURROGATE = re.compile("[\udc80-\udcff]")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?")
ADDRESS_FIELDS = (("from", "From"), ("to", "To"), ("cc", "Cc"), ("bcc", "Bcc"))


def decode_header_value(raw: Any) -> str:
    """A header value as text: unfolded, RFC 2047 decoded, bad bytes replaced."""
    if raw is None:
        return ""
    text = str(raw)
    if "=?" not in text:  # the common case: no encoded word
        if "\n" in text:
            text = _FOLD.sub("", text)
        return text.strip()
    if _SURROGATE.search(text):
        # raw 8-bit bytes decoded with surrogateescape: most are UTF-8
        text = text.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    text = _FOLD.sub("", text)
    if not _ENCODED_WORD.search(text):
        return text.strip()
    try:
        parts = decode_header(text)
    except Exception:  # a malformed encoded word: keep the text as it is
        return text.strip()
    safe = []
    for value, charset in parts:
        if isinstance(value, bytes):
            if charset in (None, "unknown-8bit"):
                # decode_header's own encoding of the unencoded runs
                value = value.decode("raw-unicode-escape", "replace")
                charset = None
            else:
                value = _decode_bytes(value, charset)
                charset = "utf-8"
        safe.append((value, charset))
    try:
        return str(make_header(safe)).strip()
    except Exception:
        return "".join(value for value, _charset in safe).strip()


def _decode_bytes(value: bytes, charset: Optional[str]) -> str:
    try:
        return value.decode(charset or "utf-8", "replace")
    except (LookupError, ValueError):  # an unknown charset name, or one holding a NUL
        return value.decode("utf-8", "replace")


def _parse_headers(block: bytes) -> Headers:
    return Headers.parse(block)


@dataclass
class Attachment:
    filename: Optional[str]
    content_type: str
    size: int = 0
    sha256: str = ""

    def as_dict(self) -> dict:
        return {
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
        }


# the most of a quoted-printable line kept undecoded while waiting for its end
QP_CARRY_MAX = 64 * 1024


def _open_escape(data: bytes) -> int:
    """How many bytes at the end of `data` start a QP escape the next bytes complete
    (`=` or `=X`, also `=\r` of a soft line break); binascii.a2b_qp decodes the rest
    the same whether it is cut there or not."""
    tail = data[-2:]
    at = tail.rfind(b"=")
    return 0 if at < 0 else len(tail) - at


class _Decoder:
    """Content-Transfer-Encoding decoding of a part body, fed in arbitrary chunks."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        if self.encoding == "base64":
            return self._base64(data)
        if self.encoding == "quoted-printable":
            data = self._carry + data if self._carry else data
            cut = data.rfind(b"\n") + 1
            if len(data) - cut > QP_CARRY_MAX:
                # a line with no end in sight (an attachment without line breaks):
                # decode it too, all but an escape the next chunk completes
                cut = len(data) - _open_escape(data)
            self._carry = data[cut:]
            return binascii.a2b_qp(data[:cut]) if cut else b""
        return data

    def _base64(self, data: bytes) -> bytes:
        # Fast path: whole lines of a well-formed part hold a multiple of 4 base64
        # characters, and a2b_base64 skips the line breaks itself. A slice that does
        # not (odd line lengths) makes it raise, never decode wrongly: then the
        # whitespace is removed and the characters are counted.
        data = self._carry + data if self._carry else data
        cut = data.rfind(b"\n") + 1
        if cut:
            self._carry = data[cut:]
            try:
                return decode_lines(data[:cut] if cut < len(data) else data)
            except binascii.Error:
                data = data[:cut].translate(None, _WHITESPACE) + self._carry
        else:
            data = data.translate(None, _WHITESPACE)
        usable = len(data) - len(data) % 4
        self._carry = data[usable:]
        try:
            return binascii.a2b_base64(data[:usable])
        except binascii.Error:
            return b""

    def close(self) -> bytes:
        rest, self._carry = self._carry.translate(None, _WHITESPACE), b""
        if not rest:
            return b""
        if self.encoding == "base64":
            try:
                return binascii.a2b_base64(rest + b"=" * (-len(rest) % 4))
            except binascii.Error:
                return b""
        return binascii.a2b_qp(rest)


class Leaf:
    """A non-multipart part: hashed when an attachment, captured when the body."""

    def __init__(self, headers: Headers, body_limit: int) -> None:
        self.content_type = headers.content_type()
        disposition_value = headers.get("content-disposition")
        disposition = disposition_value.split(";", 1)[0].strip().lower()
        filename = mime_params(disposition_value).get("filename") or headers.param(
            "content-type", "name"
        )
        self.attachment: Optional[Attachment] = None
        self.body: Optional[bytearray] = None
        self.charset = headers.param("content-type", "charset") or "utf-8"
        if disposition == "attachment" or filename:
            name = decode_header_value(filename) if filename else None
            self.attachment = Attachment(name, self.content_type)
            self._hash = hashlib.sha256()
        elif body_limit > 0 and self.content_type == "text/plain":
            self.body = bytearray()
        self._limit = body_limit
        encoding = headers.get("content-transfer-encoding").strip().lower()
        self._decoder = _Decoder(encoding)
        self.base64 = encoding == "base64"
        self.wanted = self.attachment is not None or self.body is not None

    def feed(self, data: bytes) -> None:
        if self.wanted:
            self._take(self._decoder.feed(data))

    def _take(self, decoded: bytes) -> None:
        if not decoded:
            return
        if self.attachment is not None:
            self.attachment.size += len(decoded)
            self._hash.update(decoded)
        elif self.body is not None and len(self.body) < self._limit:
            self.body += decoded[: self._limit - len(self.body)]

    def close(self) -> None:
        if self.wanted:
            self._take(self._decoder.close())
        if self.attachment is not None:
            self.attachment.sha256 = self._hash.hexdigest()


@dataclass
class ParsedMessage:
    headers: Headers
    size: int
    attachments: list = field(default_factory=list)
    body: Optional[str] = None
    complete: bool = True  # False: the headers or a multipart never ended
    parse_error: Optional[str] = None  # the parser failed: the class of its error

    def header(self, name: str) -> str:
        values = self.headers.get_all(name.lower())
        if len(values) == 1:
            return decode_header_value(values[0])
        return ", ".join(decode_header_value(value) for value in values)

    def date(self):
        raw = self.header("Date")
        if not raw:
            return None
        try:
            moment = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if moment is None or moment.tzinfo is None:
            return None
        try:
            # year 9999 with a negative offset is past datetime.max in UTC
            return moment.astimezone(timezone.utc)
        except (OverflowError, ValueError):
            return None

    def fields(self) -> dict:
        """The message fields of docs/audit_export.md (no request context, time, event_id)."""
        out = {name: self.header(header) for name, header in ADDRESS_FIELDS}
        out["reply_to"] = self.header("Reply-To")
        out["subject"] = self.header("Subject")
        out["date"] = self.header("Date")
        out["message_id"] = self.header("Message-ID")
        out["size"] = self.size
        labels = self.header("X-Gmail-Labels")
        out["gmail_labels"] = [label.strip() for label in labels.split(",") if label.strip()]
        out["gmail_thread_id"] = self.header("X-GM-THRID")
        out["attachments"] = [attachment.as_dict() for attachment in self.attachments]
        out["attachment_count"] = len(self.attachments)
        # parsed addresses for the CIM Email fields (src_user, recipient)
        out["sender"] = _first_address(out["from"])
        out["recipients"] = _addresses(out["to"], out["cc"], out["bcc"])
        if self.body is not None:
            out["body"] = self.body
        if not self.complete:
            out["truncated"] = True
        if self.parse_error:
            out["parse_error"] = self.parse_error
        return out


# Linear whatever the header (up to HEADER_LIMIT): a bare address starts only where
# a run of address characters starts (the look-behind), so a long run is not
# rescanned from each of its characters, and every part is bounded (RFC 5321
# allows 64 and 255; real VERP/SRS local parts run longer, hence 256).
_ANGLE_ADDRESS = re.compile(r"<\s*([^<>\s@]{1,256}@[^<>\s]{1,255}?)\s*>")
_LOCAL_CHARS = "A-Za-z0-9!#$%&'*+/=?^_`{|}~.-"
_BARE_ADDRESS = re.compile(
    rf"(?<![{_LOCAL_CHARS}])[{_LOCAL_CHARS}]{{1,256}}@[A-Za-z0-9.-]{{1,254}}[A-Za-z0-9]"
)
_QUOTED_OR_COMMENT = re.compile(r'"(?:[^"\\]|\\.)*"|\([^()]*\)')


def _addresses(*values: str) -> list:
    """The addr-specs of address headers, one per comma-separated item: the `<...>`
    one where given, else the bare one. Quoted display names and comments, which
    may hold an `@` or a comma, are dropped first."""
    found: dict = {}  # ordered, with a constant-time membership test
    for value in values:
        if not value or "@" not in value:
            continue
        text = _QUOTED_OR_COMMENT.sub("", value) if ('"' in value or "(" in value) else value
        for item in text.split(","):
            match = _ANGLE_ADDRESS.search(item) or _BARE_ADDRESS.search(item)
            if match:
                address = match.group(1) if match.re is _ANGLE_ADDRESS else match.group(0)
                found.setdefault(address, None)
    return list(found)


def _first_address(value: str) -> str:
    addresses = _addresses(value)
    return addresses[0] if addresses else ""


class MessageParser:
    """Push bytes of one message in with `feed`, then `close()` for the result."""

    def __init__(self, include_body: bool = False, body_max_bytes: int = 32 * 1024) -> None:
        self._body_limit = body_max_bytes if include_body else 0
        self._headers = bytearray()
        self._top: Optional[Headers] = None
        self._pending = b""  # an incomplete line (multipart scanning only)
        self._held = b""  # a line break that may precede a boundary line
        self._boundaries: list[bytes] = []
        self._part_headers: Optional[bytearray] = None
        self._leaf: Optional[Leaf] = None
        self._body_leaf: Optional[Leaf] = None
        self.attachments: list = []
        self.size = 0

    # -- header block ------------------------------------------------------
    def feed(self, data: bytes) -> None:
        self.size += len(data)
        if self._top is None:
            data = self._feed_headers(data)
            if self._top is None or not data:
                return
        self._feed_body(data)

    def _feed_headers(self, data: bytes) -> bytes:
        start = max(0, len(self._headers) - 3)
        self._headers += data
        end, gap = header_end(self._headers, start)
        if end < 0:
            if len(self._headers) > HEADER_LIMIT + 4:
                # keep the first HEADER_LIMIT bytes and the tail we must search
                del self._headers[HEADER_LIMIT:-4]
            return b""
        rest = bytes(self._headers[end + gap :])
        block = bytes(self._headers[: min(end, HEADER_LIMIT)])
        self._headers = bytearray()
        self._top = _parse_headers(block)
        self._begin_entity(self._top)
        return rest

    # -- body --------------------------------------------------------------
    def _begin_entity(self, headers: Headers) -> None:
        """A part's headers are known: a multipart pushes its boundary, a leaf starts."""
        try:
            self._begin_entity_checked(headers)
        except Exception:  # headers too broken to read: the part is skipped, not fatal
            self._leaf = None

    def _begin_entity_checked(self, headers: Headers) -> None:
        if headers.content_type().startswith("multipart/"):
            boundary = headers.param("content-type", "boundary")
            if boundary:
                self._boundaries.append(str(boundary).encode("latin-1", "replace"))
                self._leaf = None  # the preamble is not content
                return
        leaf = Leaf(headers, self._body_limit if self._body_leaf is None else 0)
        if leaf.body is not None:
            self._body_leaf = leaf
        self._leaf = leaf

    def _feed_body(self, data: bytes) -> None:
        if not self._boundaries and self._part_headers is None:
            if self._leaf is not None and self._leaf.wanted:
                self._leaf.feed(data)
            return
        data = self._pending + data if self._pending else data
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            self._pending = data
            if len(data) > (1 << 20):  # a huge line: it cannot be a boundary line
                self._pending = b""
                self._content(data)
            return
        self._pending = data[cut:]
        self._lines(data[:cut] if cut < len(data) else data)

    def _lines(self, block: bytes) -> None:
        """Complete lines of a multipart body: find boundary lines with bytes.find."""
        position = 0
        while position < len(block):
            if self._part_headers is not None:
                position = self._collect_part_headers(block, position)
                continue
            hit = block.find(b"--", position)
            # a boundary is a line start: either the block start or after a \n
            while hit > 0 and block[hit - 1 : hit] != b"\n":
                hit = block.find(b"--", hit + 1)
            if hit < 0:
                self._content(block[position:])
                return
            line_end = block.find(b"\n", hit) + 1
            kind = self._boundary_kind(block[hit:line_end])
            if kind is None:
                self._content(block[position:line_end])
                position = line_end
                continue
            # the line break before a boundary belongs to the boundary (RFC 2046)
            before = block[position:hit]
            if before:
                self._content(before, ends_before_boundary=True)
            self._held = b""
            self._end_leaf()
            if kind == "close":
                self._leaf = None  # the epilogue is not content
            else:
                self._part_headers = bytearray()
            position = line_end

    def _boundary_kind(self, line: bytes) -> Optional[str]:
        return boundary_kind(line, self._boundaries)

    def _collect_part_headers(self, block: bytes, position: int) -> int:
        """Gather a part's header block up to its blank line; return where its body starts."""
        buffer = self._part_headers
        assert buffer is not None
        if position < len(block) and block[position] in (10, 13) and not buffer:
            end, gap = position, (2 if block[position] == 13 else 1)  # no header at all
        else:
            end, gap = blank_line(block, position, bool(buffer))
        if end < 0:
            if len(buffer) < PART_HEADER_LIMIT:
                buffer += block[position:]
            return len(block)
        if len(buffer) < PART_HEADER_LIMIT:
            buffer += block[position:end]
        self._part_headers = None
        self._begin_entity(_parse_headers(bytes(buffer)))
        return end + gap

    def _content(self, data: bytes, ends_before_boundary: bool = False) -> None:
        leaf = self._leaf
        if leaf is None or not leaf.wanted:
            self._held = b""
            return
        if leaf.base64:
            # line breaks mean nothing in base64: no need to hold one back
            self._held = b""
            leaf.feed(data)
            return
        if self._held:
            data = self._held + data
            self._held = b""
        if ends_before_boundary:
            data = (
                data[:-2] if data.endswith(b"\r\n") else data[:-1] if data.endswith(b"\n") else data
            )
        elif data.endswith(b"\r\n"):
            data, self._held = data[:-2], b"\r\n"
        elif data.endswith(b"\n"):
            data, self._held = data[:-1], b"\n"
        leaf.feed(data)

    def _end_leaf(self) -> None:
        if self._leaf is not None:
            self._leaf.close()
            if self._leaf.attachment is not None:
                self.attachments.append(self._leaf.attachment)
            self._leaf = None

    def close(self) -> ParsedMessage:
        complete = True
        if self._top is None:
            # the header block never ended: what there is, is the header block
            complete = False
            self._top = _parse_headers(bytes(self._headers[:HEADER_LIMIT]))
            self._headers = bytearray()
        else:
            if self._pending:
                pending, self._pending = self._pending, b""
                if self._part_headers is None:
                    self._content(pending)
            if self._boundaries or self._part_headers is not None:
                complete = False  # a multipart never reached its closing boundary
            if self._held and self._leaf is not None and self._leaf.wanted:
                self._leaf.feed(self._held)
            self._held = b""
            self._end_leaf()
        return self._result(complete)

    def _result(self, complete: bool) -> ParsedMessage:
        body = None
        if self._body_leaf is not None and self._body_leaf.body is not None:
            body = _decode_bytes(bytes(self._body_leaf.body), self._body_leaf.charset)
        return ParsedMessage(
            headers=self._top,
            size=self.size,
            attachments=self.attachments,
            body=body,
            complete=complete,
        )


def boundary_kind(line: bytes, boundaries: list) -> Optional[str]:
    """Is `line` a boundary line of one of the open multiparts (innermost first)?
    "open" or "close", updating the `boundaries` stack, or None."""
    text = line.rstrip(b" \t\r\n")
    for depth in range(len(boundaries) - 1, -1, -1):
        marker = b"--" + boundaries[depth]
        if text == marker or text == marker + b"--":
            # an outer boundary also ends every inner multipart
            del boundaries[depth + 1 :]
            if text.endswith(b"--") and text != marker:
                boundaries.pop()
                return "close"
            return "open"
    return None


def blank_line(block: bytes, start: int, at_line_start: bool) -> tuple:
    """The first empty line at or after `start` in a block of whole lines: its
    offset and length, or (-1, 0). `at_line_start`: a line ended just before `start`."""
    if at_line_start:
        if block.startswith(b"\n", start):
            return start, 1
        if block.startswith(b"\r\n", start):
            return start, 2
    lf = block.find(b"\n\n", start)
    # bounded by the LF hit: an unbounded second search would rescan the whole block
    crlf = block.find(b"\n\r\n", start, len(block) if lf < 0 else lf)
    if crlf >= 0:
        return crlf + 1, 2
    if lf >= 0:
        return lf + 1, 1
    return -1, 0


def header_end(buffer: bytearray, start: int) -> tuple:
    """Offset of the blank line ending a header block, and its length."""
    if buffer.startswith(b"\n"):
        return 0, 1
    if buffer.startswith(b"\r\n"):
        return 0, 2
    lf = buffer.find(b"\n\n", start)
    crlf = buffer.find(b"\r\n\r\n", start, len(buffer) if lf < 0 else lf)
    if crlf >= 0:
        return crlf + 2, 2
    if lf >= 0:
        return lf + 1, 1
    return -1, 0
