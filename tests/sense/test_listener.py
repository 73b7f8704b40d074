"""The sense_listener service over real sockets and real TLS: every answer of docs/sense_listener.md."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time

import pytest

from mailsec.core.params import ConfigError
from mailsec.sense.dedupe import COLLECTION
from mailsec.sense.server import Limits
from sense.listener import KEY_NAME, KEY_VALUE, Pki, RunningListener, Stores
from sense.sender import ENCODINGS, encode, make_report

FAST = Limits(request_timeout=1.0, idle_timeout=0.5, linger_timeout=0.5, poll_interval=0.05)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def stores():
    return Stores()


@pytest.fixture
def start(pki, stores):
    running = []

    def _start(tls=True, **kwargs):
        kwargs.setdefault("limits", FAST)
        listener = RunningListener(pki if tls else None, stores, **kwargs).start()
        running.append(listener)
        return listener

    yield _start
    for listener in running:
        if listener.alive:
            listener.finish()


def remembered(stores) -> int:
    store = stores.collections.get(COLLECTION)
    return sum(len(day) for day in store.data.values()) if store else 0


def read_answer(conn: socket.socket) -> tuple:
    """Status and JSON body of one answer read from a raw connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    length = int(headers.get("Content-Length", 0))
    while len(body) < length:
        chunk = conn.recv(4096)
        if not chunk:
            break
        body += chunk
    status = int(lines[0].split()[1]) if lines[0] else None
    return status, json.loads(body[:length] or b"{}"), headers, body[length:]


def raw_post(body: bytes, key: str = KEY_VALUE, extra: str = "", path: str = "/sense") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"{KEY_NAME}: {key}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode("latin-1") + body


# -- the happy path -----------------------------------------------------------


def test_a_300_bot_report_gives_300_bot_events_and_one_report_event(start):
    listener = start()
    answer = listener.sender().send_report(make_report(300), "as_sense_sample")
    assert answer.status == 200
    assert answer.body == {
        "status": "ok",
        "message_id": "1539105912000",
        "bots": 300,
        "bots_skipped": 0,
        "events": 301,
    }
    kinds = [e.sourcetype for e in listener.events]
    assert kinds.count("apigee:sense:bot") == 300
    assert kinds.count("apigee:sense:report") == 1
    report = listener.events[-1].data
    assert report["source_ip"] == "127.0.0.1"
    assert report["bots_in_report"] == report["total_number_of_bots"] == 300
    assert all(e.source == "sense_listener://sense_test" for e in listener.events)


def test_every_encoding_posted_gives_the_same_events(start):
    listener = start()
    sender = listener.sender()
    base = make_report(25, seed=3)
    per_encoding = []
    for n, encoding in enumerate(ENCODINGS):
        # a distinct messageId per post, else the second is a duplicate
        report = json.loads(json.dumps(base))
        report["text"]["metadata"]["messageId"] = f"m{n}"
        before = len(listener.events)
        assert sender.send_report(report, encoding).status == 200, encoding
        fresh = listener.events[before:]
        per_encoding.append(
            [
                {
                    k: v
                    for k, v in e.data.items()
                    if k not in ("message_id", "event_id", "received_at")
                }
                for e in fresh
            ]
        )
    assert all(events == per_encoding[0] for events in per_encoding[1:])
    assert len(per_encoding[0]) == 26


def test_keep_alive_serves_several_reports_on_one_connection(start):
    listener = start()
    sender = listener.sender(keep_alive=True)
    for n in range(3):
        answer = sender.send_report(make_report(2, message_id=f"k{n}"), "object")
        assert answer.status == 200
        assert answer.headers["connection"] == "keep-alive"
    assert listener.server.stats["connections"] == 1
    sender.close()


def test_answers_are_sent_at_once_not_held_by_nagle(start, monkeypatch):
    # An answer written while the client has not acknowledged the TLS 1.3 session
    # tickets would otherwise wait for its delayed ACK (40 ms on Linux).
    from mailsec.sense import server

    seen = []
    real = server._no_delay

    def spy(connection):
        real(connection)
        seen.append(connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    monkeypatch.setattr(server, "_no_delay", spy)
    sender = start().sender()
    for n in range(2):
        assert sender.send_report(make_report(1, message_id=f"n{n}"), "object").status == 200
    assert len(seen) == 2 and all(seen)


def test_a_chunked_body_is_read(start):
    listener = start()
    body = encode(make_report(4, message_id="c1"), "text_string")
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 100]), body[i : i + 100])
        for i in range(0, len(body), 100)
    )
    with listener.connect() as conn:
        conn.sendall(
            (
                f"POST /sense HTTP/1.1\r\nHost: localhost\r\n{KEY_NAME}: {KEY_VALUE}\r\n"
                "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            ).encode()
            + chunks
            + b"0\r\n\r\n"
        )
        status, answer, _, _ = read_answer(conn)
    assert (status, answer["events"]) == (200, 5)


def test_expect_100_continue_is_answered_only_when_the_body_is_wanted(start):
    listener = start()
    body = encode(make_report(1, message_id="e1"), "object")
    with listener.connect() as conn:
        conn.sendall(
            raw_post(b"", extra="Expect: 100-continue\r\n").replace(
                b"Content-Length: 0", f"Content-Length: {len(body)}".encode()
            )
        )
        interim = conn.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.sendall(body)
        status, answer, _, _ = read_answer(conn)
        assert (status, answer["status"]) == (200, "ok")
    with listener.connect() as conn:
        conn.sendall(
            raw_post(b"", key="wrong", extra="Expect: 100-continue\r\n").replace(
                b"Content-Length: 0", f"Content-Length: {len(body)}".encode()
            )
        )
        status, _, headers, _ = read_answer(conn)
        assert status == 401  # a final answer instead of 100: the body is never sent
        assert headers["Connection"] == "close"


# -- refusals: status, reason, and nothing indexed -----------------------------


def test_a_wrong_or_missing_key_is_401_and_indexes_nothing(start, stores):
    listener = start()
    body = encode(make_report(3), "object")
    for sender in (
        listener.sender(key_value="wrong-key"),
        listener.sender(key_value=KEY_VALUE + "x"),
        listener.sender(key_value=KEY_VALUE.upper()),
        listener.sender(key_value=None),
        listener.sender(key_name="X-Other-Header"),
    ):
        answer = sender.post(body)
        assert answer.status == 401
        assert answer.body == {"status": "error", "reason": f"missing or wrong {KEY_NAME}"}
    # the key twice is not the key once
    with listener.connect() as conn:
        conn.sendall(raw_post(body, extra=f"{KEY_NAME}: {KEY_VALUE}\r\n"))
        assert read_answer(conn)[0] == 401
    assert listener.events == []
    assert remembered(stores) == 0


def test_a_source_outside_the_allow_list_is_closed_before_tls_and_indexes_nothing(start, stores):
    listener = start(params={"allowed_sources": "10.0.0.0/8, 192.0.2.1"})
    with pytest.raises((ConnectionError, ssl.SSLError)):
        listener.sender().send_report(make_report(3), "object")
    # closed right after accept(): no slot taken, no handshake made, nothing read
    stats = listener.server.stats
    assert stats["refused_source"] >= 1
    assert stats["connections"] == stats["tls_failed"] == 0
    assert listener.events == [] and remembered(stores) == 0
    allowed = start(params={"allowed_sources": "10.0.0.0/8,127.0.0.0/8"})
    assert allowed.sender().send_report(make_report(3), "object").status == 200


def test_a_body_over_the_limit_is_413_before_it_is_read(start, stores):
    listener = start(params={"max_body_bytes": "4096"})
    big = encode(make_report(60), "object")
    assert len(big) > 4096
    answer = listener.sender().post(big)  # http.client sends it all, then reads
    assert answer.status == 413
    assert answer.body["reason"] == "the body is larger than 4096 bytes"
    assert answer.headers["connection"] == "close"
    # a declared 1 GiB body is refused from its Content-Length alone
    with listener.connect() as conn:
        conn.sendall(raw_post(b"").replace(b"Content-Length: 0", b"Content-Length: 1073741824"))
        assert read_answer(conn)[0] == 413
    # a chunked body is counted as it is read
    with listener.connect() as conn:
        conn.sendall(
            f"POST /sense HTTP/1.1\r\nHost: x\r\n{KEY_NAME}: {KEY_VALUE}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
            + b"".join(b"400\r\n" + b"x" * 1024 + b"\r\n" for _ in range(5))
        )
        assert read_answer(conn)[0] == 413
    assert listener.events == [] and remembered(stores) == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{this is not json", "the body is not valid JSON"),
        (json.dumps({"text": {"bots": []}}).encode(), "the report has no 'metadata' object"),
        (json.dumps(json.dumps({"text": json.dumps({"metadata": {"org": "o"}})})).encode(), "metadata.env is missing or empty"),
        (b"", "the body is empty"),
    ],
)  # fmt: skip
def test_a_malformed_body_or_a_report_without_metadata_is_400(start, stores, body, reason):
    listener = start()
    answer = listener.sender().post(body)
    assert answer.status == 400
    assert answer.body["reason"].startswith(reason)
    assert listener.events == [] and remembered(stores) == 0


def test_another_path_is_404_and_a_get_is_405(start, stores):
    listener = start()
    sender = listener.sender()
    body = encode(make_report(2), "object")
    answer = sender.post(body, path="/other")
    assert (answer.status, answer.body["reason"]) == (404, "no such path")
    for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"):
        answer = sender.post(body if method != "GET" else b"", method=method)
        assert answer.status == 405, method
        assert answer.headers["allow"] == "POST"
    # the configured path with a query string or a trailing slash is the same path
    assert sender.post(body, path="/sense/?from=sense").status == 200
    assert len(listener.events) == 3


def test_malformed_http_is_400_and_closes(start):
    listener = start()
    for request in (
        b"POST\r\n\r\n",
        b"POST /sense HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /sense HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /sense HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST /sense HTTP/1.1\r\n" + b"X-Pad: y\r\n" * 200 + b"\r\n",
    ):
        with listener.connect() as conn:
            conn.sendall(request)
            status, _, headers, _ = read_answer(conn)
        assert status == 400, request[:60]
        assert headers["Connection"] == "close"
    assert listener.events == []


def test_a_request_target_urlsplit_cannot_read_is_400_not_an_internal_error(start):
    listener = start()
    for target in (b"//[x/sense", b"http://[::1/sense"):
        with listener.connect() as conn:
            conn.sendall(b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            status, answer, _, _ = read_answer(conn)
        assert status == 400, target
        assert "malformed request target" in json.dumps(answer)
    assert listener.events == []


def test_a_failed_write_is_not_200_and_is_not_remembered(start, stores):
    class FailingOnce:
        def __init__(self):
            self.events, self.calls = [], 0

        def write(self, events):
            self.calls += 1
            if self.calls == 1:
                raise OSError("splunkd closed the pipe")
            self.events.extend(events)
            return len(self.events)

    listener = start(sink=FailingOnce())
    sender = listener.sender()
    report = make_report(2, message_id="w1")
    assert sender.send_report(report, "object").status == 500
    assert remembered(stores) == 0
    assert sender.send_report(report, "object").body["status"] == "ok"  # not a duplicate


# -- duplicates -------------------------------------------------------------------


def test_a_repeated_message_id_is_a_duplicate_after_a_restart_too(start, stores):
    listener = start()
    report = make_report(5, message_id="1539105912220")
    sender = listener.sender()
    assert sender.send_report(report, "object").body["status"] == "ok"
    # the same report in another encoding is the same report
    again = sender.send_report(report, "body_and_text_string")
    assert (again.status, again.body) == (
        200,
        {"status": "duplicate", "message_id": "1539105912220"},
    )
    assert len(listener.events) == 6
    listener.finish()

    restarted = start()  # a new process: only the KV store is shared
    answer = restarted.sender().send_report(report, "as_sense_sample")
    assert (answer.status, answer.body["status"]) == (200, "duplicate")
    assert restarted.events == []
    # the same messageId from another environment is another report
    other = make_report(5, message_id="1539105912220", env="test")
    assert restarted.sender().send_report(other, "object").body["status"] == "ok"
    assert len(restarted.events) == 6


def test_two_copies_arriving_together_are_indexed_once(start):
    listener = start()
    body = encode(make_report(50, message_id="race"), "object")
    answers = []

    def post():
        answers.append(listener.sender().post(body).body["status"])

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == ["duplicate"] * 5 + ["ok"]
    assert len(listener.events) == 51


# -- timeouts, connection bound, stop, TLS ----------------------------------------


def test_a_slow_sender_does_not_hold_up_others_and_is_cut_off(start, stores):
    listener = start()
    request = raw_post(encode(make_report(2, message_id="slow"), "object"))
    conn = listener.connect()
    cut_off = {}

    def trickle():
        started = time.monotonic()
        try:
            for byte in request:
                conn.sendall(bytes([byte]))
                time.sleep(0.05)
        except OSError:
            pass
        cut_off["after"] = time.monotonic() - started

    trickler = threading.Thread(target=trickle)
    trickler.start()
    time.sleep(0.2)
    # other senders are served at once while the trickler holds its connection
    for n in range(3):
        began = time.monotonic()
        assert (
            listener.sender().send_report(make_report(3, message_id=f"f{n}"), "object").status
            == 200
        )
        assert time.monotonic() - began < 0.5
    trickler.join(10)
    conn.close()
    # cut off at the 1 s deadline, though each byte came well within a per-read timeout
    assert 0.9 <= cut_off["after"] < 3
    assert listener.server.stats["timed_out"] == 1
    assert {e.data["message_id"] for e in listener.events} == {"f0", "f1", "f2"}


def test_the_connection_bound_queues_the_next_sender_until_a_slot_frees(start):
    listener = start(limits=Limits(**{**FAST.__dict__, "max_connections": 2}))
    # two clients that connect and never send hold both slots
    hogs = [socket.create_connection(("127.0.0.1", listener.port)) for _ in range(2)]
    time.sleep(0.1)
    began = time.monotonic()
    answer = listener.sender().send_report(make_report(1, message_id="q"), "object")
    waited = time.monotonic() - began
    assert answer.status == 200
    # served only once the idle hogs were dropped at their 1 s deadline
    assert 0.7 <= waited < 3
    for hog in hogs:
        hog.close()


def test_stop_during_a_request_lets_it_finish_and_be_indexed(start):
    listener = start(limits=Limits(**{**FAST.__dict__, "request_timeout": 5.0}))
    request = raw_post(encode(make_report(10, message_id="term"), "object"))
    with listener.connect() as conn:
        conn.sendall(request[: len(request) // 2])
        time.sleep(0.2)
        listener.stop.set()  # what SIGTERM does through the adapter
        time.sleep(0.3)
        assert listener.alive  # still serving the request in flight
        conn.sendall(request[len(request) // 2 :])
        status, answer, headers, _ = read_answer(conn)
    assert (status, answer["events"]) == (200, 11)
    assert headers["Connection"] == "close"  # no keep-alive while stopping
    listener.finish(timeout=5)
    assert len(listener.events) == 11
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", listener.port), timeout=1)


def test_an_idle_keep_alive_connection_does_not_delay_the_stop(start):
    listener = start(limits=Limits(**{**FAST.__dict__, "idle_timeout": 30.0}))
    sender = listener.sender(keep_alive=True)
    assert sender.send_report(make_report(1, message_id="i"), "object").status == 200
    began = time.monotonic()
    listener.finish(timeout=5)
    assert time.monotonic() - began < 1.0
    sender.close()


def test_plain_http_to_the_tls_port_fails_cleanly(start):
    listener = start()
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as conn:
        conn.sendall(raw_post(encode(make_report(2), "object")))
        status, answer, _, _ = read_answer(conn)
    assert (status, answer["reason"]) == (400, "this port speaks HTTPS: use https://")
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as conn:
        conn.sendall(b"\x00\x01garbage")
        assert conn.recv(100) == b""  # closed, no answer
    # the listener still serves HTTPS
    assert listener.sender().send_report(make_report(2, message_id="p"), "object").status == 200
    assert len(listener.events) == 3


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_below_1_2_is_refused_and_a_bad_handshake_does_not_hurt(start, pki):
    listener = start()
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(cadata=pki.ca.cert_pem.decode())
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    address = ("127.0.0.1", listener.port)
    with pytest.raises((ssl.SSLError, ConnectionError)), socket.create_connection(address) as raw:
        old.wrap_socket(raw, server_hostname="localhost")
    # a client that does not trust the certificate aborts; the listener goes on
    untrusting = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError), socket.create_connection(address) as raw:
        untrusting.wrap_socket(raw, server_hostname="localhost")
    with listener.connect() as conn:
        assert conn.version() in ("TLSv1.2", "TLSv1.3")
    assert listener.sender().send_report(make_report(1, message_id="t"), "object").status == 200


def test_plain_http_mode_for_a_tls_terminating_proxy(start):
    listener = start(tls=False)
    assert listener.sender().send_report(make_report(2), "object").status == 200


# -- configuration -----------------------------------------------------------------


def test_unauthenticated_mode_accepts_posts_without_a_key(start):
    listener = start(params={"api_key_value": "", "allow_unauthenticated": "true"})
    answer = listener.sender(key_value=None).send_report(make_report(2), "object")
    assert answer.status == 200


def test_the_masked_key_without_its_stored_secret_is_a_configuration_error(pki, stores):
    listener = RunningListener(pki, stores)
    listener.run.input_secrets = lambda: {}
    with pytest.raises(ConfigError) as error:
        listener.start()
    assert error.value.field == "api_key_value"


def test_a_port_in_use_is_a_configuration_error(pki, stores, start):
    first = start()
    second = RunningListener(pki, stores, params={"port": str(first.port)})
    with pytest.raises(ConfigError) as error:
        second.start()
    assert error.value.field == "port"
