"""The fast path (a message parsed whole) gives the same events as the streaming parser.

Every comparison is against `MessageParser` fed the same bytes in small random
pieces, the path a message larger than WHOLE_MESSAGE_MAX takes.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from audit import corpus
from mailsec.audit import pipeline
from mailsec.audit.mbox import MboxSplitter
from mailsec.audit.message import MessageParser
from mailsec.audit.pipeline import Emitter
from mailsec.audit.wholemessage import WholeMessageParser, parse_whole

BEGIN = datetime(2026, 1, 1, tzinfo=timezone.utc)


def streamed(raw: bytes, include_body: bool, body_max: int = 32 * 1024, seed: int = 5):
    parser = MessageParser(include_body, body_max)
    rng = random.Random(seed)
    position = 0
    while position < len(raw):
        size = rng.randint(1, 3000)
        parser.feed(raw[position : position + size])
        position += size
    return parser.close()


def assert_same(fast, slow) -> None:
    assert fast.fields() == slow.fields()
    assert fast.complete == slow.complete
    assert fast.size == slow.size
    assert fast.date() == slow.date()


CORPUS = corpus.build("quinn@example.com", BEGIN, 42, "fast", attachment_kib=(1, 300))


@pytest.mark.parametrize("include_body", [False, True])
def test_whole_corpus_takes_the_fast_path_with_equal_fields(include_body):
    for spec in CORPUS:
        raw = spec.raw()
        fast = WholeMessageParser(include_body, 32 * 1024).parse(raw)
        assert fast is not None, spec.message_id  # a regular message never declines
        assert_same(fast, streamed(raw, include_body))
        for name, value in spec.expected_fields().items():
            assert fast.fields()[name] == value, (spec.message_id, name)


def mime(*parts: bytes, boundary: bytes = b"B", end: bytes = b"--B--\n") -> bytes:
    head = (
        b"Subject: =?UTF-8?Q?caf=C3=A9?= \xff\nContent-Type: multipart/mixed; boundary=" + boundary
    )
    return head + b"\n\npreamble\n" + b"".join(parts) + end + b"epilogue\n"


ATTACHMENT = (
    b"--B\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n"
    b'Content-Disposition: attachment; filename="a.pdf"\n\nQUJD\nREVG\n'
)
TEXT_QP = (
    b"--B\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
    b"soft=\nbreak caf=C3=A9\n--not a boundary\n--Bx not one either\n\n"
)
HOSTILE = {
    "nested, inner closed": mime(
        b"--B\nContent-Type: multipart/alternative; boundary=I\n\n--I\n\ninner text\n--I--\n",
        ATTACHMENT,
    ),
    "nested, closed by the outer boundary": mime(
        b'--B\nContent-Type: multipart/related; boundary="I"\n\n--I\nContent-Type: text/plain\n\n'
        b"never closed\n",
        ATTACHMENT,
    ),
    "boundary a prefix of the inner one": mime(
        b"--B\nContent-Type: multipart/alternative; boundary=B-x\n\n--B-x\nContent-Disposition: "
        b"attachment; filename=t.txt\n\nxyz\n--B-x--\n",
        ATTACHMENT,
    ),
    "quoted-printable body with dash lines": mime(TEXT_QP, ATTACHMENT),
    "crlf line ends": mime(TEXT_QP, ATTACHMENT).replace(b"\n", b"\r\n"),
    "part without headers": mime(b"--B\n\nno headers here\n", ATTACHMENT),
    "empty part content": mime(
        b'--B\nContent-Disposition: attachment; filename="empty"\n\n', ATTACHMENT
    ),
    "boundary line with trailing blanks": mime(TEXT_QP.replace(b"--B\n", b"--B \t\n"), ATTACHMENT),
    "malformed base64": mime(ATTACHMENT.replace(b"QUJD\nREVG", b"QU=J!D\nRE")),
    "never closed": mime(TEXT_QP, ATTACHMENT, end=b""),
    "close line without a line break": mime(TEXT_QP, ATTACHMENT, end=b"--B--")[
        : -len("epilogue\n")
    ],
    "part headers never end": mime(b"--B\nContent-Type: text/plain", end=b""),
    "no header block end": b"Subject: only headers\nFrom: a@x.org",
    "empty message": b"",
    "no headers at all": b"\nbody only\n",
    "single part base64 attachment": (
        b"Content-Type: image/png; name=p.png\nContent-Transfer-Encoding: base64\n\niVBORw0K\n"
    ),
    "long header block": b"Subject: s\nX-Long: " + b"y" * (1_100_000) + b"\n\nbody\n",
    "missing Date, RFC 2047 everywhere": (
        b"From: =?UTF-8?B?Sm9z?= =?UTF-8?B?w6k=?= <jose@example.com>\n"
        b"To: =?ISO-8859-1?Q?Andr=E9?= <andre@example.com>\nSubject: =?x-unknown?Q?abc?=\n\nhi\n"
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("include_body", [False, True])
def test_hostile_messages_give_the_same_fields(name, include_body):
    raw = HOSTILE[name]
    assert_same(parse_whole(raw, include_body, 1024), streamed(raw, include_body, 1024))


def test_irregular_messages_decline_the_fast_path():
    for name in ("never closed", "part headers never end", "no header block end"):
        assert WholeMessageParser().parse(HOSTILE[name]) is None, name
    assert WholeMessageParser().parse(HOSTILE["nested, closed by the outer boundary"]) is not None


def test_cut_and_damaged_corpus_messages_give_the_same_fields():
    rng = random.Random(11)
    for spec in CORPUS[:21]:
        raw = spec.raw()
        lines = raw.split(b"\n")
        variants = [raw[: rng.randint(0, len(raw))] for _ in range(3)]
        for _ in range(3):
            damaged = list(lines)
            del damaged[rng.randrange(len(damaged))]
            variants.append(b"\n".join(damaged))
        for variant in variants:
            assert_same(parse_whole(variant, True, 512), streamed(variant, True, 512))


def events_of(raw: bytes, include_body: bool) -> list:
    written: list = []

    def make_event(ordinal, parsed):
        return (ordinal, parsed.fields(), parsed.date())

    emitter = Emitter(make_event, lambda events, durable: written.extend(events), 0, include_body)
    splitter = MboxSplitter(emitter)
    for position in range(0, len(raw), 65536):
        splitter.feed(raw[position : position + 65536])
    splitter.close()
    emitter.flush()
    return written


@pytest.mark.parametrize("include_body", [False, True])
def test_the_pipeline_gives_the_same_events_whole_or_streamed(monkeypatch, include_body):
    raw = corpus.mbox(CORPUS, BEGIN) + b"From x@y Thu Jan  1 00:00:00 2026\nSubject: cut"
    fast = events_of(raw, include_body)
    monkeypatch.setattr(pipeline, "WHOLE_MESSAGE_MAX", 0)  # every message streams
    slow = events_of(raw, include_body)
    assert len(fast) == len(CORPUS) + 1
    assert fast == slow
    assert fast[-1][1]["truncated"] is True
