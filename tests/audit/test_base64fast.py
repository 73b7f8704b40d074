"""SIMD base64 decoding gives exactly what binascii gives, or defers to it."""

from __future__ import annotations

import base64
import binascii
import random

from mailsec.audit import base64fast
from mailsec.audit.base64fast import decode_lines


def binascii_or_error(data: bytes):
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return "error"


def ours_or_error(data: bytes):
    try:
        return decode_lines(data)
    except binascii.Error:
        return "error"


def test_simd_decoder_is_active_with_pybase64_installed():
    # a dev requirement: the fallback to binascii must not hide a broken import here
    assert base64fast.SIMD


def test_canonical_base64_with_lf_or_crlf_lines():
    rng = random.Random(2)
    for size in (0, 1, 2, 3, 57, 58, 4096, 100_003):
        data = rng.randbytes(size)
        text = base64.encodebytes(data)
        assert decode_lines(text) == data
        assert decode_lines(text.replace(b"\n", b"\r\n")) == data
        assert decode_lines(text.rstrip(b"\n")) == data


def test_damaged_base64_decodes_as_binascii_does():
    rng = random.Random(9)
    alphabet = b"ABCxyz019+/=\n\r -!"
    for _ in range(3000):
        text = bytearray(base64.encodebytes(rng.randbytes(rng.randint(0, 200))))
        for _ in range(rng.randint(1, 3)):
            where = rng.randint(0, len(text))
            choice = rng.random()
            if choice < 0.4:
                text[where:where] = bytes([rng.choice(alphabet)])
            elif choice < 0.8 and text:
                del text[min(where, len(text) - 1)]
            else:
                text = text[:where]
        assert ours_or_error(bytes(text)) == binascii_or_error(bytes(text)), bytes(text)
