"""`make demo`: the Sense listener run as splunkd runs it, fed by the Sense sender, then
attacked by the hostile peer (tests/sense/hostile.py) before one more report."""

from __future__ import annotations

import socket
import time

from harness import modinput
from harness.certs import client_ssl_context
from sense.hostile import OUTSIDER, HostilePeer, chunked_head, length_head
from sense.sender import ENCODINGS, SenseSender, make_report

TITLE = "Apigee Sense webhook listener (sense_listener)"
KEY_NAME, KEY_VALUE = "X-API-Key", "demo-sense-key-41c2"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(env) -> dict:
    port = _free_port()
    cert, key = env.ca.issue_server(("localhost", "127.0.0.1")).write(env.tmp / "sense", "listener")
    env.splunkd.add_input_secrets("sense_listener", "demo", {"api_key_value": KEY_VALUE})
    stanza = {
        "sense_listener://demo": {
            "interval": "0",
            "port": str(port),
            "bind_address": "127.0.0.1",
            "tls_cert_file": str(cert),
            "tls_key_file": str(key),
            "api_key_name": KEY_NAME,
            "api_key_value": "******",
            "allowed_sources": "127.0.0.1/32",
            "index": "main",
        }
    }
    sender = SenseSender(
        f"https://localhost:{port}/sense",
        key_name=KEY_NAME,
        key_value=KEY_VALUE,
        ssl_context=client_ssl_context(env.ca),
    )
    answers = {}
    with modinput.start(
        env.script("sense_listener.py"),
        stanza,
        server_uri=env.splunkd.server_uri,
        session_key=env.splunkd.session_key,
    ) as running:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or not running.running:
                    raise RuntimeError(f"no listener: {running.stderr[-1500:]}") from None
                time.sleep(0.1)
        big = make_report(300, message_id="demo-300")
        answers["300 bots"] = sender.send_report(big, "as_sense_sample").status
        for n, encoding in enumerate(ENCODINGS):
            report = make_report(3, message_id=f"demo-enc-{n}", seed=n)
            answers[encoding] = sender.send_report(report, encoding).status
        answers["repeat"] = sender.send_report(big, "object").body.get("status")
        wrong = SenseSender(sender_url := f"https://localhost:{port}/sense", key_name=KEY_NAME,
                            key_value="wrong", ssl_context=client_ssl_context(env.ca))  # fmt: skip
        answers["wrong key"] = wrong.send_report(big).status
        answers["GET"] = sender.post(b"", method="GET").status
        answers["other path"] = (
            SenseSender(
                sender_url.replace("/sense", "/other"),
                key_name=KEY_NAME,
                key_value=KEY_VALUE,
                ssl_context=client_ssl_context(env.ca),
            )
            .send_report(big)
            .status
        )
        hostile = _attack(HostilePeer(port, client_ssl_context(env.ca)), sender)
        running.wait_for(301 + 4 * len(ENCODINGS) + 3, timeout=20)
        exit_code = running.terminate(timeout=20)
        events = running.result().events
    bots = [e for e in events if e.sourcetype == "apigee:sense:bot"]
    reports = [e for e in events if e.sourcetype == "apigee:sense:report"]
    env.show("apigee:sense:bot", bots, limit=2)
    env.show("apigee:sense:report", reports, limit=1)
    for what, answer in answers.items():
        print(f"  {what:>22}: {answer}")
    indexed = any(e.json().get("message_id") == "demo-after-attack" for e in reports)
    print(
        f"  hostile peers refused (malformed framing: {hostile['refusals']}; "
        f"{hostile['idle_from_outside']} idle connections from {OUTSIDER} closed at accept), "
        f"and the report still indexed: {hostile['after']} in {hostile['seconds']} s, "
        f"{'indexed' if indexed else 'NOT indexed'}"
    )
    return {
        "bot_events": len(bots),
        "report_events": len(reports),
        "answers": answers,
        "exit_code_after_sigterm": exit_code,
        "hostile_peers": {**hostile, "report_indexed": indexed},
    }


def _attack(peer: HostilePeer, sender: SenseSender) -> dict:
    """Malformed framing, an endless header block and idle holders from outside
    allowed_sources; then one report from the allowed sender, timed."""
    chunked = chunked_head("/sense", KEY_NAME, KEY_VALUE)
    refusals = [
        peer.request_then_push(chunked + b"-1\r\n", 8 << 20),
        peer.request_then_push(length_head("/sense", KEY_NAME, KEY_VALUE, "\u00b2") + b"{}"),
        peer.endless_headers(chunked[: chunked.index(b"Content-Type")], 8 << 20),
    ]
    try:
        idle = peer.hold_idle(50, OUTSIDER)
        began = time.monotonic()
        after = sender.send_report(make_report(2, message_id="demo-after-attack")).status
        seconds = round(time.monotonic() - began, 2)
    finally:
        peer.release()
    return {"refusals": refusals, "idle_from_outside": idle, "after": after, "seconds": seconds}
