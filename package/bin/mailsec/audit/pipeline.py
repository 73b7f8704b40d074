"""Plaintext mbox chunks → message events, in batches, with resumption.

Shared by the input and the benchmark: decryption feeds chunks in, the splitter
cuts messages, each message is parsed as it streams, and every `batch_size`
messages the events are written and the progress callback records how many
messages of the file are now durable. A restart passes that count back as `skip`:
the skipped messages are split (to count them) but neither parsed nor written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Callable, Optional

from mailsec.audit.mbox import MboxSplitter
from mailsec.audit.message import MessageParser, ParsedMessage
from mailsec.core.events import Event

BATCH_MESSAGES = 200
BATCH_BYTES = 8 << 20  # JSON of at most ~8 MiB in flight before a write


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
        self._parser: Optional[MessageParser] = None
        self._ordinal = -1
        self._batch: list = []
        self._batch_bytes = 0
        self.messages = 0  # messages ended in the file, skipped ones included
        self.written = skip
        self.truncated: Optional[int] = None  # ordinal of a cut-off last message

    def start(self, ordinal: int) -> None:
        self._ordinal = ordinal
        self._parser = (
            None if ordinal < self._skip else MessageParser(self._include_body, self._body_max)
        )

    def data(self, chunk: bytes) -> None:
        if self._parser is not None:
            self._parser.feed(chunk)

    def end(self, last: bool) -> None:
        self.messages = self._ordinal + 1
        if self._parser is None:
            return
        parsed = self._parser.close()
        self._parser = None
        if last and not parsed.complete:
            self.truncated = self._ordinal
        event = self._make_event(self._ordinal, parsed)
        self._batch.append(event)
        self._batch_bytes += parsed.size
        if len(self._batch) >= self._batch_messages or self._batch_bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._batch:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            self._write(batch, self.messages)
            self.written = self.messages


class NotAnMbox(ValueError):
    pass


def run_pipeline(chunks: Iterable[bytes], emitter: Emitter) -> MboxSplitter:
    """Feed plaintext chunks through the splitter into `emitter`.

    When `chunks` raises (gpg reports a corrupt or truncated file after its last
    chunk), the messages already closed by a following separator are written and
    the error propagates; the message open at that moment is not emitted.
    """
    splitter = MboxSplitter(emitter)
    try:
        for chunk in chunks:
            splitter.feed(chunk)
            if splitter.preamble_bytes and not splitter.messages:
                raise NotAnMbox(
                    "the decrypted file does not start with an mbox 'From ' line: not an mbox"
                )
    except BaseException:
        emitter.flush()
        raise
    splitter.close()
    emitter.flush()
    return splitter
