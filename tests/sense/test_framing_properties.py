"""Property tests of the listener's HTTP/1.1 framing (hypothesis).

Random valid and invalid request heads, Content-Length values, chunk sizes, chunk
extensions and trailers, each request cut at random points into the reads the
server makes. Every request gets the answer docs/sense_listener.md names for it
(200 for a report; 400 for a body that is not one; 401, 404, 405 from the head),
or is refused 400, 413 or 431; never a 500, never a wait past the deadline. The body
handed to the report parser is byte for byte the body sent.

The server reads from a scripted socket: each recv() returns the next piece, so the
cuts are exactly the reads; once the pieces are used up the peer is silent, and
each wait moves a fake clock by the socket timeout, so a deadline passes at once.
The grammar the expectations follow is RFC 9112's: chunk-size = 1*HEXDIG (h11 caps
it at 20 digits), Content-Length = 1*DIGIT (20 digits at most), section 6.3 for a
request with both framings.
"""

from __future__ import annotations

import logging
import re
import socket
import string
import threading
from dataclasses import dataclass

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailsec.core.checkpoint import MemoryCheckpointStore
from mailsec.core.events import ListSink
from mailsec.sense.config import SenseListenerConfig
from mailsec.sense.dedupe import MessageLedger
from mailsec.sense.receiver import SenseReceiver
from mailsec.sense.server import Limits, ListenerServer
from sense.sender import ENCODINGS, encode, make_report

LIMIT = 4096
KEY_NAME, KEY_VALUE = "X-API-Key", "framing-key-5e1"
LIMITS = Limits(
    max_body_bytes=LIMIT,
    request_timeout=5.0,
    idle_timeout=1.0,
    linger_timeout=1.0,
    poll_interval=0.5,
)
_VALID_CHUNK_LINE = re.compile(r"[0-9A-Fa-f]{1,20}(;.*)?[ \t]*", re.DOTALL)
_RESERVED = {"host", "content-length", "transfer-encoding", "expect", "connection", "upgrade",
             "te", "trailer", KEY_NAME.lower()}  # fmt: skip


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ScriptedSocket:
    """recv() returns the pieces one per call; then the peer is silent."""

    def __init__(self, pieces: list, clock: FakeClock) -> None:
        self.pieces = [piece for piece in pieces if piece]
        self.clock = clock
        self.timeout = None
        self.sent = b""
        self.waits = 0

    def settimeout(self, timeout) -> None:
        self.timeout = timeout

    def recv(self, size: int, flags: int = 0) -> bytes:
        if self.pieces:
            piece = self.pieces.pop(0)
            if len(piece) > size:
                self.pieces.insert(0, piece[size:])
                piece = piece[:size]
            return piece
        self.waits += 1
        assert self.waits < 1000, "the server keeps waiting: no deadline"
        self.clock.now += self.timeout if self.timeout is not None else 1.0
        raise socket.timeout("silent peer")

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def shutdown(self, how) -> None:
        pass

    def close(self) -> None:
        pass


class RecordingReceiver(SenseReceiver):
    """The real receiver; records each body handed to the report parser."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bodies: list = []

    def handle(self, request, body):
        self.bodies.append(body)
        return super().handle(request, body)


@dataclass
class Case:
    method: str
    target: str
    key: str
    framing: str
    body: bytes
    is_report: bool
    wire: bytes

    def expected(self) -> int:
        if self.framing in ("bad_length", "both"):
            return 400
        if self.framing == "huge_head":
            return 431
        if self.target.split("?")[0].rstrip("/") != "/sense":
            return 404
        if self.method != "POST":
            return 405
        if self.key != "good":
            return 401
        if self.framing in ("huge_length", "huge_chunked"):
            return 413
        if self.framing == "bad_chunk":
            return 400
        return 200 if self.is_report else 400


names = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=12).filter(
    lambda name: name.lower() not in _RESERVED
)
values = st.text(string.ascii_letters + string.digits + " -_.;=/,", max_size=30).map(str.strip)
fields = st.lists(st.tuples(names, values), max_size=4)


@st.composite
def chunk_size_token(draw, size: int) -> str:
    digits = f"{size:x}"
    digits = "0" * draw(st.integers(0, 20 - len(digits))) + digits
    return draw(st.sampled_from([digits, digits.upper()]))


extensions = st.sampled_from(["", ";ext", ";name=value", ';q="quoted; value"', ";a=1;b", " "])
bad_lengths = st.one_of(
    st.sampled_from(["²", "-1", "+5", "0x10", "1_0", "١٢", "5" * 21, "", "1 2", "5,6", "1e3"]),
    st.text(string.digits + string.ascii_letters + "+-_ .²", min_size=1, max_size=25).filter(
        lambda v: not re.fullmatch(r"[0-9]{1,20}", v.strip(" ")) and "," not in v
    ),
)
bad_chunk_lines = st.one_of(
    st.sampled_from(["-1", "+1f", "0x10", "1_0", " 10", "", "g", "1 0", "²", "0" * 21]),
    st.text(string.hexdigits + "xX+-_ .²g", min_size=1, max_size=24).filter(
        lambda v: not _VALID_CHUNK_LINE.fullmatch(v)
    ),
)


@st.composite
def chunks(draw, body: bytes) -> bytes:
    """`body` as data chunks cut at random points (no last chunk)."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=6))))
    edges = [0, *[c for c in cuts if c < len(body)], len(body)]
    out = b""
    for start, end in zip(edges, edges[1:]):
        if end > start:
            size = draw(chunk_size_token(end - start))
            out += f"{size}{draw(extensions)}\r\n".encode() + body[start:end] + b"\r\n"
    return out


@st.composite
def chunked(draw, body: bytes) -> bytes:
    """`body` chunked, then the last chunk and trailers."""
    out = draw(chunks(body))
    out += f"{draw(st.sampled_from(['0', '000']))}{draw(extensions)}\r\n".encode()
    for name, value in draw(fields):
        out += f"{name}: {value}\r\n".encode()
    return out + b"\r\n"


@st.composite
def cases(draw, wanted: bool = False) -> Case:
    """A request; `wanted`: a report the listener indexes, framed either way."""
    method = "POST" if wanted else draw(st.sampled_from(["POST"] * 6 + ["GET", "PUT", "BREW"]))
    targets = ["/sense"] * 6 + ["/sense/?from=sense"] + ([] if wanted else ["/other", "/"])
    target = draw(st.sampled_from(targets))
    key = "good" if wanted else draw(st.sampled_from(["good"] * 6 + ["wrong", "none"]))
    is_report = wanted or draw(st.booleans())
    if is_report:
        report = make_report(draw(st.integers(1, 3)), message_id=f"p{draw(st.integers(0, 10**9))}")
        body = encode(report, draw(st.sampled_from(ENCODINGS)))
    else:
        body = draw(st.binary(max_size=600))
    framings = ["length", "chunked"] * 4
    framings += [] if wanted else ["bad_length", "bad_chunk", "both", "huge_length",
                                   "huge_chunked", "huge_head"]  # fmt: skip
    framing = draw(st.sampled_from(framings))
    head = [f"{method} {target} HTTP/1.1", "Host: localhost"]
    if key != "none":
        head.append(f"{KEY_NAME}: {KEY_VALUE if key == 'good' else 'wrong'}")
    head += [f"{name}: {value}" for name, value in draw(fields)]
    if draw(st.booleans()) and framing in ("length", "chunked", "huge_length"):
        head.append("Expect: 100-continue")
    if framing == "huge_head":
        head.append("X-Padding: " + "p" * draw(st.integers(65 << 10, 80 << 10)))
    payload = body
    if framing in ("length", "huge_head"):
        head.append(f"Content-Length: {len(body)}")
    elif framing == "chunked":
        head.append("Transfer-Encoding: chunked")
        payload = draw(chunked(body))
    elif framing == "bad_length":
        head.append(f"Content-Length: {draw(bad_lengths)}")
    elif framing == "bad_chunk":
        head.append("Transfer-Encoding: chunked")
        payload = draw(chunks(body[: draw(st.integers(0, len(body)))]))
        payload += f"{draw(bad_chunk_lines)}\r\n".encode() + body[:50]
    elif framing == "both":
        head += [f"Content-Length: {len(body)}", "Transfer-Encoding: chunked"]
    elif framing == "huge_length":
        head.append(f"Content-Length: {draw(st.integers(LIMIT + 1, 10**19))}")
    elif framing == "huge_chunked":
        head.append("Transfer-Encoding: chunked")
        big = draw(st.binary(min_size=LIMIT + 1, max_size=LIMIT + 2000))
        payload = draw(chunked(big))
    wire = ("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + payload
    return Case(method, target, key, framing, body, is_report, wire)


def split(wire: bytes, cuts: list) -> list:
    points = sorted({c % (len(wire) + 1) for c in cuts})
    edges = [0, *points, len(wire)]
    return [wire[a:b] for a, b in zip(edges, edges[1:])]


def final_answers(sent: bytes) -> list:
    """(status, body) of each final answer in `sent`, parsed by h11 as a client."""
    client = h11.Connection(h11.CLIENT)
    client.receive_data(sent)
    answers = []
    while True:
        client.send(h11.Request(method="POST", target="/", headers=[("Host", "x"),
                                                                    ("Content-Length", "0")]))  # fmt: skip
        client.send(h11.EndOfMessage())
        status, body = None, b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return answers
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                answers.append((status, body))
                break
        if client.our_state is not h11.DONE or client.their_state is not h11.DONE:
            return answers
        client.start_next_cycle()


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock()
        logger = logging.getLogger("test.sense.framing")
        logger.disabled = True  # thousands of refusals: their lines are tested elsewhere
        config = SenseListenerConfig(port=1, tls=False, api_key_name=KEY_NAME,
                                     api_key_value=KEY_VALUE, max_body_bytes=LIMIT)  # fmt: skip
        ledger = MessageLedger(MemoryCheckpointStore(), "framing", logger=logger)
        self.receiver = RecordingReceiver(config, ListSink(), ledger, logger)
        self.server = ListenerServer(
            ("127.0.0.1", 0), self.receiver, limits=LIMITS, logger=logger, clock=self.clock
        )
        self.server.close()  # no socket is accepted: connections are scripted

    def serve(self, pieces: list) -> ScriptedSocket:
        peer = ScriptedSocket(pieces, self.clock)
        self.server.serve_connection(peer, "127.0.0.1", threading.Event())
        return peer


HARNESS = Harness()
PROFILE = settings(max_examples=250, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip


@PROFILE
@given(case=cases(), cuts=st.lists(st.integers(0, 1 << 20), max_size=12))
def test_every_request_gets_its_answer_whatever_the_reads(case, cuts):
    seen = len(HARNESS.receiver.bodies)
    started = HARNESS.clock.now
    peer = HARNESS.serve(split(case.wire, cuts))
    answers = final_answers(peer.sent)
    assert len(answers) == 1, (case.framing, peer.sent[:300])
    status, body = answers[0]
    assert status == case.expected(), (case.framing, case.method, case.target, case.key, body)
    handed = HARNESS.receiver.bodies[seen:]
    if case.expected() in (200,) or (status == 400 and case.framing in ("length", "chunked")):
        assert handed == [case.body]  # byte for byte what was sent
    else:
        assert handed == []  # refused before the parser saw a byte
    # answered without waiting for a deadline (the silent peer after the answer only
    # costs the idle or linger time, never the request deadline)
    assert HARNESS.clock.now - started < LIMITS.request_timeout


@PROFILE
@given(
    first=cases(wanted=True),
    second=cases(wanted=True),
    cuts=st.lists(st.integers(0, 1 << 20), max_size=12),
)
def test_keep_alive_requests_cut_anywhere_are_each_answered(first, second, cuts):
    seen = len(HARNESS.receiver.bodies)
    peer = HARNESS.serve(split(first.wire + second.wire, cuts))
    assert [status for status, _ in final_answers(peer.sent)] == [200, 200]
    assert HARNESS.receiver.bodies[seen:] == [first.body, second.body]


def test_a_request_cut_short_gets_408_at_its_deadline():
    head = (
        f"POST /sense HTTP/1.1\r\nHost: x\r\n{KEY_NAME}: {KEY_VALUE}\r\nContent-Length: 10\r\n\r\n"
    )
    started = HARNESS.clock.now
    peer = HARNESS.serve([head.encode(), b"12345"])
    assert [status for status, _ in final_answers(peer.sent)] == [408]
    assert LIMITS.request_timeout <= HARNESS.clock.now - started < LIMITS.request_timeout + 1
