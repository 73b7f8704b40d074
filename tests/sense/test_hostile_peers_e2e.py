"""sense_listener run as splunkd runs it (the built add-on's script, input XML on stdin,
real TLS), attacked by the hostile peer: malformed framing is refused with bounded
memory, idle holders from outside allowed_sources do not delay an allowed sender, and
the same listener still indexes a report afterwards."""

from __future__ import annotations

import time

import pytest

from harness import modinput
from harness.certs import client_ssl_context
from sense.hostile import (
    MALFORMED_CHUNK_SIZES,
    MALFORMED_CONTENT_LENGTHS,
    OUTSIDER,
    HostilePeer,
    chunked_head,
    length_head,
)
from sense.listener import KEY_NAME, KEY_VALUE, Pki, free_port
from sense.sender import SenseSender, make_report

pytestmark = pytest.mark.slow

PUSHED_AFTER_THE_BAD_LINE = 48 << 20
PEAK_RSS_LIMIT = 100 << 20


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def wait_listening(port: int, running, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert running.running, f"the input exited: {running.stderr[-2000:]}"
        try:
            HostilePeer(port).connect(tls=False, timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("the listener did not open its port")


@pytest.fixture
def pki(tmp_path):
    return Pki.create(tmp_path / "pki")


def test_hostile_peers_are_refused_and_the_listener_still_indexes(
    installed_app, splunkd, pki, splunk_home
):
    port = free_port()
    splunkd.add_input_secrets("sense_listener", "edge", {"api_key_value": KEY_VALUE})
    stanza = {
        "sense_listener://edge": {
            "interval": "0",
            "port": str(port),
            "bind_address": "127.0.0.1",
            "tls_cert_file": str(pki.cert_file),
            "tls_key_file": str(pki.key_file),
            "api_key_name": KEY_NAME,
            "api_key_value": "******",
            "allowed_sources": "127.0.0.1/32",
            "max_body_bytes": "1048576",
            "index": "sense",
        }
    }
    context = client_ssl_context(pki.ca)
    peer = HostilePeer(port, context)
    with modinput.start(
        installed_app / "bin" / "sense_listener.py",
        stanza,
        server_uri=splunkd.server_uri,
        session_key=splunkd.session_key,
    ) as running:
        wait_listening(port, running)
        before = peak_rss(running.pid)

        for size in MALFORMED_CHUNK_SIZES:
            head = chunked_head("/sense", KEY_NAME, KEY_VALUE) + f"{size}\r\n".encode()
            status = peer.request_then_push(head, PUSHED_AFTER_THE_BAD_LINE)
            assert status in (400, 413), size
        for length in MALFORMED_CONTENT_LENGTHS:
            head = length_head("/sense", KEY_NAME, KEY_VALUE, length)
            assert peer.request_then_push(head + b"{}", 0) == 400, length[:12]
        head = f"POST /sense HTTP/1.1\r\nHost: localhost\r\n{KEY_NAME}: {KEY_VALUE}\r\n"
        assert peer.endless_headers(head.encode(), PUSHED_AFTER_THE_BAD_LINE) in (431, 400)
        peak = peak_rss(running.pid)
        assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak >> 20} MiB (at start {before >> 20} MiB)"

        try:
            assert peer.hold_idle(100, OUTSIDER) == 100
            sender = SenseSender(
                f"https://localhost:{port}/sense",
                key_name=KEY_NAME,
                key_value=KEY_VALUE,
                ssl_context=context,
            )
            began = time.monotonic()
            answer = sender.send_report(make_report(50, message_id="after-the-attack"))
            waited = time.monotonic() - began
        finally:
            peer.release()
        assert (answer.status, answer.body["events"]) == (200, 51)
        assert waited < 2.0, f"the allowed sender waited {waited:.2f}s"
        running.wait_for(51, timeout=20)
        assert running.terminate(timeout=20) == 0
        result = running.result()
    assert [e.json()["message_id"] for e in result.events] == ["after-the-attack"] * 51
    assert "/mailsec/sense/" not in result.stderr  # no traceback of the listener on stderr
    log = (
        splunk_home / "var" / "log" / "splunk" / "ta_mailsec_sense_listener_edge.log"
    ).read_text()
    assert "action=source_refused source_ip=127.0.0.2" in log
    assert log.count("action=source_refused") < 100  # the refusals are not one line each
    assert "action=connection_failed" not in log  # every attack had its answer, no traceback
    assert KEY_VALUE not in log
