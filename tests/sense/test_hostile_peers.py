"""The listener against hostile peers (tests/sense/hostile.py), in process over real TLS:
malformed framing is refused at once, a source outside allowed_sources never holds a
slot, and an allowed sender is served promptly whatever the others do."""

from __future__ import annotations

import threading
import time

import pytest

from mailsec.sense.server import Limits
from sense.hostile import (
    MALFORMED_CHUNK_SIZES,
    MALFORMED_CONTENT_LENGTHS,
    OUTSIDER,
    HostilePeer,
    chunked_head,
    length_head,
)
from sense.listener import KEY_NAME, KEY_VALUE, Pki, RunningListener, Stores
from sense.sender import make_report

FAST = Limits(request_timeout=1.0, idle_timeout=0.5, linger_timeout=0.5, poll_interval=0.05)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def start(pki):
    running = []

    def _start(limits=FAST, **kwargs):
        listener = RunningListener(pki, Stores(), limits=limits, **kwargs).start()
        running.append(listener)
        return listener

    yield _start
    for listener in running:
        if listener.alive:
            listener.finish()


def hostile(listener) -> HostilePeer:
    return HostilePeer(listener.port, listener.client_context())


def served_within(listener, seconds: float, message_id: str) -> float:
    began = time.monotonic()
    answer = listener.sender().send_report(make_report(2, message_id=message_id), "object")
    took = time.monotonic() - began
    assert answer.status == 200
    assert took < seconds, f"the allowed sender waited {took:.2f}s"
    return took


@pytest.mark.parametrize("size", MALFORMED_CHUNK_SIZES)
def test_a_malformed_chunk_size_is_400_at_once_whatever_follows(start, size):
    listener = start(params={"max_body_bytes": "1024"})
    head = chunked_head("/sense", KEY_NAME, KEY_VALUE) + f"{size}\r\n".encode()
    began = time.monotonic()
    assert hostile(listener).request_then_push(head, 4 << 20) == 400
    assert time.monotonic() - began < FAST.request_timeout + FAST.linger_timeout + 0.5
    assert listener.events == []
    assert listener.server.stats["status_400"] == 1


@pytest.mark.parametrize("length", MALFORMED_CONTENT_LENGTHS, ids=lambda v: repr(v)[:12])
def test_a_malformed_content_length_is_400(start, length):
    listener = start()
    head = length_head("/sense", KEY_NAME, KEY_VALUE, length)
    assert hostile(listener).request_then_push(head + b"{}", 0) == 400
    assert listener.events == []


def test_an_endless_header_block_is_431(start):
    listener = start()
    head = f"POST /sense HTTP/1.1\r\nHost: localhost\r\n{KEY_NAME}: {KEY_VALUE}\r\n".encode()
    assert hostile(listener).endless_headers(head, 4 << 20) == 431
    assert listener.events == []


def test_a_chunked_body_is_refused_413_once_past_the_limit(start):
    listener = start(params={"max_body_bytes": "1024"})
    # a legal chunk size far past the limit: refused once 1024 bytes came, not read on
    head = chunked_head("/sense", KEY_NAME, KEY_VALUE) + b"fffffff\r\n"
    assert hostile(listener).request_then_push(head, 4 << 20) == 413
    assert listener.events == []


def test_both_framings_at_once_are_refused(start):
    listener = start()
    head = length_head("/sense", KEY_NAME, KEY_VALUE, "5").replace(
        b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert hostile(listener).request_then_push(head + b"0\r\n\r\n", 0) == 400


def test_idle_holders_outside_allowed_sources_never_take_a_slot(start):
    listener = start(
        limits=Limits(**{**FAST.__dict__, "max_connections": 2, "request_timeout": 30.0}),
        params={"allowed_sources": "127.0.0.1/32"},
    )
    peer = hostile(listener)
    try:
        # more holders than slots, none of them ever starting a handshake
        assert peer.hold_idle(20, OUTSIDER) == 20
        time.sleep(0.2)
        for n in range(3):
            served_within(listener, 1.0, f"idle-{n}")
    finally:
        peer.release()
    assert listener.server.stats["refused_source"] == 20
    assert listener.server.stats["tls_failed"] == 0


def test_a_flood_from_outside_is_refused_without_a_read(start):
    listener = start(params={"allowed_sources": "127.0.0.1/32"})
    peer = hostile(listener)
    flooding = threading.Thread(target=lambda: peer.flood(300, OUTSIDER))
    flooding.start()
    try:
        for n in range(3):
            served_within(listener, 2.0, f"flood-{n}")
    finally:
        flooding.join(60)
    assert peer.flood(20, OUTSIDER) == 0  # each one reset before anything was read
    assert listener.server.stats["refused_source"] >= 320
    assert listener.server.stats["connections"] == 3  # only the allowed sender's


def test_slow_loris_trickles_are_cut_off_and_do_not_hold_up_a_sender(start):
    listener = start(limits=Limits(**{**FAST.__dict__, "max_connections": 8}))
    peer = hostile(listener)
    request = length_head("/sense", KEY_NAME, KEY_VALUE, "100") + b"{" * 100
    took = []
    trickles = [
        threading.Thread(target=lambda: took.append(peer.trickle(request, 0.05))) for _ in range(4)
    ]
    for trickle in trickles:
        trickle.start()
    time.sleep(0.3)
    try:
        served_within(listener, 0.5, "loris")
    finally:
        for trickle in trickles:
            trickle.join(10)
    # each cut off at the 1 s request deadline though every byte came within 50 ms
    assert len(took) == 4 and all(0.9 <= t < 3 for t in took)
    assert listener.server.stats["timed_out"] == 4
