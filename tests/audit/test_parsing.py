"""The streaming mbox splitter and the MIME parser, against hand-built input."""

from __future__ import annotations

import base64
import hashlib
import random
import tracemalloc

import pytest

from audit import corpus
from mailsec.audit.mbox import MboxSplitter
from mailsec.audit.message import MessageParser, decode_header_value


class Collect:
    def __init__(self) -> None:
        self.messages: list = []
        self.lasts: list = []
        self._current = bytearray()

    def start(self, ordinal: int) -> None:
        self._current = bytearray()

    def data(self, chunk: bytes) -> None:
        self._current += chunk

    def end(self, last: bool) -> None:
        self.messages.append(bytes(self._current))
        self.lasts.append(last)


def split(raw: bytes, sizes=None) -> Collect:
    collect = Collect()
    splitter = MboxSplitter(collect)
    position = 0
    rng = random.Random(7)
    while position < len(raw):
        size = sizes or rng.randint(1, 97)
        splitter.feed(raw[position : position + size])
        position += size
    splitter.close()
    return collect


def test_from_line_in_body_does_not_split_a_message():
    raw = (
        b"From a@x Mon Jan  1 00:00:00 2024\nSubject: one\n\nFirst line\n"
        b"From here on the body goes on\nand on\n\n"
        b"From b@x Mon Jan  1 00:00:01 2024\nSubject: two\n\nbody\n\n"
    )
    for size in (None, 1, 3, len(raw)):
        found = split(raw, size)
        assert found.messages == [
            b"Subject: one\n\nFirst line\nFrom here on the body goes on\nand on\n",
            b"Subject: two\n\nbody\n",
        ]
        assert found.lasts == [False, True]


def test_mboxrd_quoting_is_undone_one_level():
    raw = (
        b"From a@x Mon Jan  1 00:00:00 2024\nSubject: q\n\n"
        b">From quoted once\n>>From quoted twice\n> From not a From line\n\n"
    )
    assert split(raw).messages == [
        b"Subject: q\n\nFrom quoted once\n>From quoted twice\n> From not a From line\n"
    ]


def test_corpus_round_trips_through_mboxrd():
    from datetime import datetime, timezone

    specs = corpus.build("quinn@example.com", datetime(2026, 1, 1, tzinfo=timezone.utc), 14, "s")
    raw = corpus.mbox(specs, datetime(2026, 1, 2, tzinfo=timezone.utc))
    found = split(raw)
    assert found.messages == [spec.raw() for spec in specs]


def test_bytes_before_the_first_separator_are_not_a_message():
    collect = Collect()
    splitter = MboxSplitter(collect)
    splitter.feed(b"garbage\n\nFrom a@x date\nSubject: s\n\nb\n")
    splitter.close()
    assert splitter.preamble_bytes == len(b"garbage\n")
    assert collect.messages == [b"Subject: s\n\nb\n"]


def parse(raw: bytes, include_body=True, body_max=1 << 20, chunk=None):
    parser = MessageParser(include_body, body_max)
    rng = random.Random(3)
    position = 0
    while position < len(raw):
        size = chunk or rng.randint(1, 4096)
        parser.feed(raw[position : position + size])
        position += size
    return parser.close()


def test_corpus_fields_equal_the_source():
    from datetime import datetime, timezone

    specs = corpus.build("quinn@example.com", datetime(2026, 1, 1, tzinfo=timezone.utc), 21, "x")
    for spec in specs:
        parsed = parse(spec.raw())
        fields = parsed.fields()
        for name, value in spec.expected_fields().items():
            assert fields[name] == value, (spec.message_id, name)
        assert fields["body"] == spec.body + spec.body_raw_extra.decode("utf-8", "replace")
        assert parsed.complete
        if spec.date is None:
            assert parsed.date() is None
        else:
            assert parsed.date() == spec.date


def test_adjacent_encoded_words_join_without_a_space():
    # email.policy.default would give "Jos é" (PLATFORM_NOTES)
    value = "=?UTF-8?B?Sm9z?= =?UTF-8?B?w6k=?= <jose@example.com>"
    assert decode_header_value(value) == "José <jose@example.com>"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("=?x-unknown?Q?abc?=", "abc"),  # unknown charset: replaced, not fatal
        ("=?UTF-8?B?////?=", "\ufffd\ufffd\ufffd"),  # invalid UTF-8 in an encoded word
        ("=?UTF-8?Q?broken", "=?UTF-8?Q?broken"),  # an unterminated word stays as is
    ],
)
def test_bad_header_bytes_are_replaced_never_fatal(raw, expected):
    assert decode_header_value(raw) == expected


def test_raw_8bit_header_bytes_read_as_utf8_invalid_ones_replaced():
    raw = b"Subject: caf\xc3\xa9 \xff end\nFrom: =?UTF-8?Q?Jos=C3=A9?= <j@x.org>\n\nbody\n"
    fields = parse(raw).fields()
    assert fields["subject"] == "caf\u00e9 \ufffd end"
    assert fields["from"] == "Jos\u00e9 <j@x.org>" and fields["sender"] == "j@x.org"


def test_rfc2231_filename_and_quoted_display_names():
    raw = (
        b'From: "Smith, J (j@evil.example)" <john@x.org>\nTo: a@x.org, "B, C" <b@y.org>\n'
        b'Content-Type: multipart/mixed; boundary="=_b"\n\n--=_b\n'
        b"Content-Type: application/pdf\nContent-Transfer-Encoding: base64\n"
        b"Content-Disposition: attachment; filename*0*=utf-8''r%C3%A9sum; filename*1*=%C3%A9.pdf\n"
        b"\nAAAA\n--=_b--\n"
    )
    fields = parse(raw).fields()
    assert fields["sender"] == "john@x.org"
    assert fields["recipients"] == ["a@x.org", "b@y.org"]
    assert fields["attachments"][0]["filename"] == "r\u00e9sum\u00e9.pdf"
    assert fields["attachments"][0]["size"] == 3


def test_body_is_cut_at_body_max_bytes_and_only_when_asked():
    raw = b"Subject: s\nContent-Type: text/plain\n\n" + b"x" * 5000
    assert parse(raw, include_body=True, body_max=100).body == "x" * 100
    assert parse(raw, include_body=False).body is None
    assert "body" not in parse(raw, include_body=False).fields()


def test_truncated_multipart_is_reported_incomplete():
    from datetime import datetime, timezone

    spec = next(
        s
        for s in corpus.build("q@example.com", datetime(2026, 1, 1, tzinfo=timezone.utc), 7, "t")
        if s.attachments
    )
    raw = spec.raw()
    assert parse(raw).complete
    assert not parse(raw[: len(raw) - 200]).complete
    assert not parse(b"Subject: no end of headers").complete


def test_a_huge_attachment_is_hashed_in_bounded_memory():
    """40 MiB of base64 attachment through the parser: the peak stays under 4 MiB."""
    block = random.Random(1).randbytes(57 * 1024)  # 57 bytes -> one 76-char line
    lines = base64.encodebytes(block)
    repeats = 540  # ~40 MiB of base64
    head = (
        b'Subject: big\nContent-Type: multipart/mixed; boundary="B"\n\n--B\n'
        b"Content-Type: text/plain\n\nhi\n--B\nContent-Type: application/octet-stream\n"
        b'Content-Transfer-Encoding: base64\nContent-Disposition: attachment; filename="big.bin"\n\n'
    )
    digest = hashlib.sha256()
    parser = MessageParser(True, 1024)
    tracemalloc.start()
    try:
        parser.feed(head)
        for _ in range(repeats):
            parser.feed(lines)
            digest.update(block)
        parser.feed(b"--B--\n")
        parsed = parser.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    attachment = parsed.attachments[0]
    assert attachment.size == len(block) * repeats
    assert attachment.sha256 == digest.hexdigest()
    assert peak < 4 * 1024 * 1024, peak
