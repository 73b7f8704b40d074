"""A streaming mbox splitter (mboxrd) that never holds a whole message in memory.

A line is a message separator only when it starts with ``From `` and follows a
blank line, or starts the file. ``mailbox.mbox`` splits on every ``From `` line
(and opens files read-write), so a body line such as ``From here on`` would cut a
message in two; it is not used.

Bytes are pushed in (``feed``) in chunks of any size and cut at line ends; every
search (separators, ``>From `` quoting) is a C-level ``bytes.find`` over a whole
block, so the cost per byte stays close to a memory copy. The handler receives
``start(ordinal)``, any number of ``data(bytes)`` and ``end(last)`` per message:
the separator line and the blank line before the next separator are not part of
the message; mboxrd quoting (``>From `` → ``From ``, one level) is undone.
"""

from __future__ import annotations

import re
from typing import Protocol

_SEP = b"From "
# mboxrd: a body line `>From `, `>>From `... had one `>` added when it was written
_QUOTED = re.compile(rb"(?m)^>(>*From )")
# a line longer than this is passed on in pieces (it cannot be a separator: those
# are short), so a binary blob without newlines cannot grow the buffer
_MAX_PENDING = 1 << 20


class MessageHandler(Protocol):
    def start(self, ordinal: int) -> None: ...

    def data(self, chunk: bytes) -> None: ...

    def end(self, last: bool) -> None: ...


def unquote_mboxrd(block: bytes) -> bytes:
    """Undo one level of `>From ` quoting; `block` begins at a line start."""
    if b">From " not in block:
        return block
    return _QUOTED.sub(rb"\1", block)


class MboxSplitter:
    def __init__(self, handler: MessageHandler) -> None:
        self._handler = handler
        self._pending = b""  # an incomplete last line
        self._held = b""  # a blank line that may turn out to precede a separator
        self._at_line_start = True
        self._after_blank = True  # the file start counts as "after a blank line"
        self._in_message = False
        self._preamble = 0  # bytes before the first separator (not an mbox if > 0)
        self.messages = 0
        self.bytes = 0

    @property
    def preamble_bytes(self) -> int:
        return self._preamble

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.bytes += len(chunk)
        data = self._pending + chunk if self._pending else chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            self._pending = data
            if len(data) > _MAX_PENDING:
                self._pass_long_line()
            return
        self._pending = data[cut:]
        self._block(data[:cut] if cut < len(data) else data)

    def close(self) -> None:
        """The input ended: the last message ends here."""
        if self._pending:
            self._block(self._pending, complete=False)
            self._pending = b""
        # a trailing blank line ends the last message, as it ends every other one
        self._held = b""
        if self._in_message:
            self._in_message = False
            self._handler.end(True)

    def _pass_long_line(self) -> None:
        # keep a tail so a `>From `/separator test at the next line start still works
        body, self._pending = self._pending[:-8], self._pending[-8:]
        self._block(body, complete=False)

    def _block(self, block: bytes, complete: bool = True) -> None:
        """Process `block`; with `complete`, it ends at a line end."""
        line_start = self._at_line_start
        position = 0
        if line_start and self._after_blank and block.startswith(_SEP):
            self._separator()
            position = _line_end(block, 0)
        elif self._held:
            self._emit(self._held, True)
        self._held = b""
        search_from = position
        while True:
            hit = block.find(b"\nFrom ", search_from)
            if hit < 0:
                break
            if _line_is_blank(block, hit, line_start):
                end = hit - 1 if block[hit - 1 : hit] == b"\r" else hit
                self._emit(block[position:end], line_start or position > 0)
                self._separator()
                position = search_from = _line_end(block, hit + 1)
            else:
                search_from = hit + 1
        rest = block[position:]
        rest_at_line_start = line_start or position > 0
        if complete and rest_at_line_start:
            # hold a trailing blank line: it belongs to no message if a separator follows
            if rest.endswith(b"\n\n") or rest == b"\n":
                self._held, rest = b"\n", rest[:-1]
            elif rest.endswith(b"\n\r\n") or rest == b"\r\n":
                self._held, rest = b"\r\n", rest[:-2]
        self._after_blank = bool(self._held)
        self._at_line_start = complete
        self._emit(rest, rest_at_line_start)

    def _emit(self, data: bytes, at_line_start: bool) -> None:
        if not data:
            return
        if not self._in_message:
            self._preamble += len(data)
            return
        if not at_line_start:
            # the first (partial) line cannot be a quoted `>From ` line
            cut = data.find(b"\n") + 1
            if cut == 0:
                self._handler.data(data)
                return
            self._handler.data(data[:cut])
            data = data[cut:]
        self._handler.data(unquote_mboxrd(data))

    def _separator(self) -> None:
        if self._in_message:
            self._handler.end(False)
        self._in_message = True
        self._held = b""
        self.messages += 1
        self._handler.start(self.messages - 1)


def _line_end(block: bytes, start: int) -> int:
    end = block.find(b"\n", start)
    return len(block) if end < 0 else end + 1


def _line_is_blank(block: bytes, newline: int, at_line_start: bool) -> bool:
    """Is the line that ends at `block[newline]` empty? `at_line_start`: does the
    block position 0 begin a line."""
    if newline == 0:
        return at_line_start
    before = block[newline - 1 : newline]
    if before == b"\n":
        return True
    if before != b"\r":
        return False
    if newline == 1:
        return at_line_start
    return block[newline - 2 : newline - 1] == b"\n"
