"""Base64 decoding of attachments, with SIMD where pybase64's compiled part loads.

`binascii.a2b_base64` decodes about 400-500 MiB/s. Attachments are about 90% of
the bytes of a typical export and its events carry the size and SHA-256 of each
decoded file, so on its own it would cost more than gpg's whole decryption.
pybase64 (SIMD, several GB/s) is vendored per platform and Python version like
cryptography (globalConfig.json meta.os-dependentLibraries); where it is missing
or its compiled part does not load, binascii does all the work, with the same
results, only slower.

Same bytes either way: pybase64 is used only in strict mode, on the text with its
line breaks removed. Strict mode accepts only canonical base64 (alphabet
characters, whole quanta, padding only at the end), which has exactly one
decoding, the one binascii gives; anything else (blanks, stray characters, odd
padding) raises, and binascii decodes it as before.
"""

from __future__ import annotations

import binascii

try:
    from pybase64._pybase64 import b64decode as _simd_b64decode  # the compiled part only
except ImportError:  # not vendored for this platform or Python: binascii alone
    _simd_b64decode = None

SIMD = _simd_b64decode is not None


def decode_lines(data: bytes) -> bytes:
    """Decode base64 text (line breaks allowed) as `binascii.a2b_base64` does;
    raises binascii.Error where it does."""
    if _simd_b64decode is not None:
        # (a one-byte replace is a memchr loop; a two-byte one is several times slower)
        text = data.replace(b"\r\n", b"") if b"\r" in data else data
        try:
            return _simd_b64decode(text.replace(b"\n", b""), validate=True)
        except ValueError:  # binascii.Error: not canonical, binascii decides
            pass
    return binascii.a2b_base64(data)
