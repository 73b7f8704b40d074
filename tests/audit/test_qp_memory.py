"""Quoted-printable in the streaming path (messages over 8 MiB) decodes in bounded
memory, even for an attachment with no line break at all (issue 10, point 4)."""

from __future__ import annotations

import binascii
import gc
import hashlib
import tracemalloc

import pytest

from mailsec.core.mailbox.message import MessageParser
from mailsec.core.mailbox.pipeline import Emitter, run_pipeline

CHUNK = 256 * 1024
# a QP body with escapes everywhere, some cut across chunk borders
PATTERN = b"abc=3Ddef=20ghi=E2=82=AC-" * 41


def qp_message(size: int):
    """An mbox of one message with a `size`-byte QP attachment and no line break in
    it, generated chunk by chunk (the test holds none of it whole)."""
    yield (
        b"From sender@example.com Mon Mar  2 12:00:00 2026\n"
        b"From: a@example.com\nTo: b@example.com\nSubject: big\n"
        b"Message-ID: <qp@example.com>\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain\n\nhello\n"
        b'--B\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename="x.bin"\n'
        b"Content-Transfer-Encoding: quoted-printable\n\n"
    )
    block = PATTERN * (CHUNK // len(PATTERN))
    sent = 0
    while sent < size:
        piece = block[: size - sent]
        sent += len(piece)
        yield piece
    yield b"\n--B--\n"


def decoded(size: int) -> tuple:
    """(size, sha256) of the attachment decoded, computed block by block."""
    block = PATTERN * (CHUNK // len(PATTERN))
    whole, rest = divmod(size, len(block))
    digest = hashlib.sha256()
    for _ in range(whole):
        digest.update(binascii.a2b_qp(block))  # each block ends on a whole escape
    digest.update(binascii.a2b_qp(block[:rest]))
    return whole * len(binascii.a2b_qp(block)) + len(binascii.a2b_qp(block[:rest])), digest


def peak_mib(size: int) -> tuple:
    events = []
    emitter = Emitter(lambda ordinal, parsed: parsed, lambda batch, n: events.extend(batch))
    gc.collect()
    tracemalloc.start()
    try:
        run_pipeline(qp_message(size), emitter)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / (1 << 20), events


@pytest.mark.parametrize("size_mib", [16, 48])
def test_a_qp_attachment_without_line_breaks_decodes_in_bounded_memory(size_mib):
    size = size_mib << 20
    peak, events = peak_mib(size)
    (parsed,) = events
    (attachment,) = parsed.attachments
    length, digest = decoded(size)
    assert (attachment.size, attachment.sha256) == (length, digest.hexdigest())
    # the whole-message buffer (8 MiB) and its join, then a flat streaming path
    assert peak < 20, f"peak {peak:.1f} MiB for a {size_mib} MiB attachment"


def test_qp_cut_anywhere_decodes_as_a_whole():
    """A chunk border inside an escape (`=E2`, a soft break `=\\r\\n`) changes nothing."""
    body = b"x" * 70000 + b"=E2=82=AC=\r\nsoft=3D" + b"y" * 70000 + b"=\ntail=41="
    expected = binascii.a2b_qp(body)
    for step in (1, 2, 3, 7, 4096, 65537):
        parser = MessageParser()
        parser.feed(
            b"Content-Type: application/octet-stream\nContent-Disposition: attachment\n"
            b"Content-Transfer-Encoding: quoted-printable\n\n"
        )
        for start in range(0, len(body), step):
            parser.feed(body[start : start + step])
        (attachment,) = parser.close().attachments
        assert attachment.size == len(expected), step
        assert attachment.sha256 == hashlib.sha256(expected).hexdigest(), step
