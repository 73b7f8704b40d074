"""Plaintext mbox chunks → message events, in batches, with resumption.

Shared by the inputs and the benchmark: any mbox byte stream (gpg's plaintext, a
zip member) feeds chunks in, the splitter cuts messages, each message is parsed
as it streams, and every `batch_size` messages the events are written and the
progress callback records how many messages of the file are now durable. A restart
passes that count back as `skip`: the skipped messages are split (to count them)
but neither parsed nor written.

A message is gathered whole (its pieces, then one join) and parsed at once by the
fast path (`wholemessage`) while it is at most WHOLE_MESSAGE_MAX bytes; past that,
the pieces gathered so far and the rest go through the streaming parser, so a
huge attachment costs no more memory than WHOLE_MESSAGE_MAX. Both give the same
events.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterable
from typing import Callable, Optional

from mailsec.core.events import Event
from mailsec.core.mailbox.headers import Headers
from mailsec.core.mailbox.mbox import MboxSplitter
from mailsec.core.mailbox.message import MessageParser, ParsedMessage
from mailsec.core.mailbox.wholemessage import parse_whole

BATCH_MESSAGES = 200
BATCH_BYTES = 8 << 20  # JSON of at most ~8 MiB in flight before a write
# a message up to this size is parsed whole; larger ones stream (memory stays flat)
WHOLE_MESSAGE_MAX = 8 << 20


class Emitter:
    """The splitter's handler: parses messages and writes them in batches."""

    def __init__(
        self,
        make_event: Callable[[int, ParsedMessage], Event],
        write: Callable[[list, int], None],
        skip: int = 0,
        include_body: bool = False,
        body_max_bytes: int = 32 * 1024,
        batch_messages: int = BATCH_MESSAGES,
    ) -> None:
        self._make_event = make_event
        self._write = write  # (events, messages of the file durable after them)
        self._skip = skip
        self._include_body = include_body
        self._body_max = body_max_bytes
        self._batch_messages = batch_messages
        self._parser: Optional[MessageParser] = None  # a message too big to hold
        self._pieces: list = []  # the current message, while it is small enough
        self._held = 0
        self._wanted = False  # False for a message already written before a restart
        self._ordinal = -1
        self._batch: list = []
        self._batch_bytes = 0
        self.messages = 0  # messages ended in the file, skipped ones included
        self.written = skip
        self.truncated: Optional[int] = None  # ordinal of a cut-off last message

    def start(self, ordinal: int) -> None:
        self._ordinal = ordinal
        self._wanted = ordinal >= self._skip
        self._parser = None
        self._pieces = []
        self._held = 0

    def data(self, chunk: bytes) -> None:
        if not self._wanted:
            return
        if self._parser is not None:
            self._parser.feed(chunk)
            return
        self._pieces.append(chunk)
        self._held += len(chunk)
        if self._held > WHOLE_MESSAGE_MAX:
            # too big to hold: stream what was gathered and everything after it
            self._parser = MessageParser(self._include_body, self._body_max)
            for piece in self._pieces:
                self._parser.feed(piece)
            self._pieces = []

    def end(self, last: bool) -> None:
        if not self._wanted:
            self.messages = self._ordinal + 1
            return
        first = self._pieces[0] if self._pieces else b""
        try:
            parsed = self._parse()
        except Exception as error:  # one unreadable message never stops the file
            self._parser, self._pieces = None, []
            parsed = _unparsed(first, self._held, error)
        if last and not parsed.complete:
            self.truncated = self._ordinal
        event = self._make_event(self._ordinal, parsed)
        self._batch.append(event)
        self._batch_bytes += parsed.size
        # counted only once its event is in the batch: if parsing raised, a flush on
        # the way out must not record this message as written
        self.messages = self._ordinal + 1
        if len(self._batch) >= self._batch_messages or self._batch_bytes >= BATCH_BYTES:
            self.flush()

    def _parse(self) -> ParsedMessage:
        if self._parser is not None:
            parser, self._parser = self._parser, None
            return parser.close()
        pieces, self._pieces = self._pieces, []
        raw = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        return parse_whole(raw, self._include_body, self._body_max)

    def flush(self) -> None:
        if self._batch:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            self._write(batch, self.messages)
            self.written = self.messages


def _unparsed(first: bytes, size: int, error: Exception) -> ParsedMessage:
    """What can be read of a message the parser failed on: its first header lines."""
    try:
        headers = Headers.parse(first[: first.find(b"\n\n") if b"\n\n" in first else 65536])
    except Exception:
        headers = Headers([])
    return ParsedMessage(headers, size, complete=False, parse_error=type(error).__name__)


class NotAnMbox(ValueError):
    pass


def keep_freed_memory_for_reuse() -> None:
    """Ask glibc to keep freed blocks of up to 16 MiB for reuse (Linux only).

    Each message makes a few short-lived buffers of its own size (the message, a
    part, its decoded bytes). With glibc's defaults these are mapped and unmapped
    (or the heap trimmed) again and again, and every page is faulted in anew: about
    a third of the pipeline's CPU time went to the kernel. The input runs in its own
    process; its peak RSS does not change (the same buffers are reused)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 16 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): defaults stay
        pass


_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3


def run_pipeline(chunks: Iterable[bytes], emitter: Emitter) -> MboxSplitter:
    """Feed plaintext chunks through the splitter into `emitter`.

    When `chunks` raises (gpg reports a corrupt or truncated file after its last
    chunk, a zip member fails its CRC), the messages already closed by a following
    separator are written and the error propagates; the message open at that moment is not emitted.
    """
    keep_freed_memory_for_reuse()
    splitter = MboxSplitter(emitter)
    try:
        for chunk in chunks:
            splitter.feed(chunk)
            if splitter.preamble_bytes and not splitter.messages:
                raise NotAnMbox("the file does not start with an mbox 'From ' line: not an mbox")
    except BaseException:
        emitter.flush()
        raise
    splitter.close()
    emitter.flush()
    return splitter
