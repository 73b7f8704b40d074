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
from email import message_from_string
from email.header import decode_header, make_header
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any, Optional

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
    if _SURROGATE.search(text):
        # raw 8-bit bytes (compat32 keeps them as surrogates): most are UTF-8
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
    except LookupError:  # an unknown charset name
        return value.decode("utf-8", "replace")


def _raw(headers: Message, name: str) -> str:
    """A header's raw text (compat32 wraps 8-bit values in Header objects)."""
    wanted = name.lower()
    for key, value in headers.raw_items():
        if key.lower() == wanted:
            return str(value)
    return ""


def _parse_headers(block: bytes) -> Message:
    # 8-bit header bytes are nearly always UTF-8 (RFC 6532); anything else is
    # replaced here, once, so every header reads as plain text afterwards
    return message_from_string(block.decode("utf-8", "replace") + "\n", policy=compat32)


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


class _Decoder:
    """Content-Transfer-Encoding decoding of a part body, fed in arbitrary chunks."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        if self.encoding == "base64":
            data = self._carry + data.translate(None, _WHITESPACE)
            usable = len(data) - len(data) % 4
            self._carry = data[usable:]
            try:
                return binascii.a2b_base64(data[:usable])
            except binascii.Error:
                return b""
        if self.encoding == "quoted-printable":
            data = self._carry + data
            cut = data.rfind(b"\n") + 1
            self._carry = data[cut:]
            return binascii.a2b_qp(data[:cut]) if cut else b""
        return data

    def close(self) -> bytes:
        rest, self._carry = self._carry, b""
        if not rest:
            return b""
        if self.encoding == "base64":
            try:
                return binascii.a2b_base64(rest + b"=" * (-len(rest) % 4))
            except binascii.Error:
                return b""
        return binascii.a2b_qp(rest)


class _Leaf:
    """A non-multipart part: hashed when an attachment, captured when the body."""

    def __init__(self, headers: Message, body_limit: int) -> None:
        self.content_type = headers.get_content_type()
        disposition = _raw(headers, "Content-Disposition").split(";")[0].strip().lower()
        try:
            filename = headers.get_filename()
        except Exception:
            filename = None
        self.attachment: Optional[Attachment] = None
        self.body: Optional[bytearray] = None
        self.charset = headers.get_content_charset() or "utf-8"
        if disposition == "attachment" or filename:
            name = decode_header_value(filename) if filename else None
            self.attachment = Attachment(name, self.content_type)
            self._hash = hashlib.sha256()
        elif body_limit > 0 and self.content_type == "text/plain":
            self.body = bytearray()
        self._limit = body_limit
        encoding = _raw(headers, "Content-Transfer-Encoding").strip().lower()
        self._decoder = _Decoder(encoding)
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
    headers: Message
    size: int
    attachments: list = field(default_factory=list)
    body: Optional[str] = None
    complete: bool = True  # False: the headers or a multipart never ended

    def header(self, name: str) -> str:
        wanted = name.lower()
        values = [value for key, value in self.headers.raw_items() if key.lower() == wanted]
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
        return moment

    def fields(self) -> dict:
        """The SPEC's message fields (without request context, time and event_id)."""
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
        return out


def _addresses(*values: str) -> list:
    found = []
    for _name, address in getaddresses([value for value in values if value]):
        if "@" in address and address not in found:
            found.append(address)
    return found


def _first_address(value: str) -> str:
    addresses = _addresses(value)
    return addresses[0] if addresses else ""


class MessageParser:
    """Push bytes of one message in with `feed`, then `close()` for the result."""

    def __init__(self, include_body: bool = False, body_max_bytes: int = 32 * 1024) -> None:
        self._body_limit = body_max_bytes if include_body else 0
        self._headers = bytearray()
        self._top: Optional[Message] = None
        self._skipping_headers = False
        self._pending = b""  # an incomplete line (multipart scanning only)
        self._held = b""  # a line break that may precede a boundary line
        self._boundaries: list[bytes] = []
        self._part_headers: Optional[bytearray] = None
        self._leaf: Optional[_Leaf] = None
        self._body_leaf: Optional[_Leaf] = None
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
        end, gap = _header_end(self._headers, start)
        if end < 0:
            if len(self._headers) > HEADER_LIMIT + 4:
                # keep the first HEADER_LIMIT bytes and the tail we must search
                del self._headers[HEADER_LIMIT:-4]
                self._skipping_headers = True
            return b""
        rest = bytes(self._headers[end + gap :])
        block = bytes(self._headers[: min(end, HEADER_LIMIT)])
        self._headers = bytearray()
        self._top = _parse_headers(block)
        self._begin_entity(self._top)
        return rest

    # -- body --------------------------------------------------------------
    def _begin_entity(self, headers: Message) -> None:
        """A part's headers are known: a multipart pushes its boundary, a leaf starts."""
        try:
            self._begin_entity_checked(headers)
        except Exception:  # headers too broken to read: the part is skipped, not fatal
            self._leaf = None

    def _begin_entity_checked(self, headers: Message) -> None:
        if headers.get_content_maintype() == "multipart":
            boundary = headers.get_param("boundary")
            if isinstance(boundary, tuple):  # RFC 2231 encoded parameter
                boundary = boundary[2]
            if boundary:
                self._boundaries.append(str(boundary).encode("latin-1", "replace"))
                self._leaf = None  # the preamble is not content
                return
        leaf = _Leaf(headers, self._body_limit if self._body_leaf is None else 0)
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
        text = line.rstrip(b" \t\r\n")
        for depth in range(len(self._boundaries) - 1, -1, -1):
            marker = b"--" + self._boundaries[depth]
            if text == marker or text == marker + b"--":
                # an outer boundary also ends every inner multipart
                del self._boundaries[depth + 1 :]
                if text.endswith(b"--") and text != marker:
                    self._boundaries.pop()
                    return "close"
                return "open"
        return None

    def _collect_part_headers(self, block: bytes, position: int) -> int:
        buffer = self._part_headers
        assert buffer is not None
        while position < len(block):
            line_end = block.find(b"\n", position) + 1 or len(block)
            line = block[position:line_end]
            position = line_end
            if line in (b"\n", b"\r\n"):
                self._part_headers = None
                self._begin_entity(_parse_headers(bytes(buffer)))
                return position
            if len(buffer) < PART_HEADER_LIMIT:
                buffer += line
        return position

    def _content(self, data: bytes, ends_before_boundary: bool = False) -> None:
        leaf = self._leaf
        if leaf is None or not leaf.wanted:
            self._held = b""
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


def _header_end(buffer: bytearray, start: int) -> tuple:
    """Offset of the blank line ending a header block, and its length."""
    lf = buffer.find(b"\n\n", start)
    crlf = buffer.find(b"\r\n\r\n", start)
    if buffer.startswith(b"\n"):
        return 0, 1
    if buffer.startswith(b"\r\n"):
        return 0, 2
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf + 2, 2
    if lf >= 0:
        return lf + 1, 1
    return -1, 0
