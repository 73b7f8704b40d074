"""sense_listener run as splunkd runs it: the built add-on's script, the input XML on
stdin, the API key from storage/passwords and the dedupe ledger in the KV store of
the splunkd stand-in, events read back from the script's stdout stream."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from harness import modinput
from mailsec.sense.dedupe import COLLECTION
from sense.listener import KEY_NAME, KEY_VALUE, Pki, free_port
from sense.sender import SenseSender, encode, make_report

pytestmark = pytest.mark.slow


@pytest.fixture
def pki(tmp_path):
    return Pki.create(tmp_path / "pki")


@pytest.fixture
def listener_input(installed_app, splunkd, pki):
    port = free_port()
    splunkd.add_input_secrets("sense_listener", "hf1", {"api_key_value": KEY_VALUE})
    stanza = {
        "sense_listener://hf1": {
            "interval": "0",
            "port": str(port),
            "bind_address": "127.0.0.1",
            "path": "/sense",
            "tls": "1",
            "tls_cert_file": str(pki.cert_file),
            "tls_key_file": str(pki.key_file),
            "api_key_name": KEY_NAME,
            "api_key_value": "******",  # what splunkd passes for an encrypted field
            "max_body_bytes": "1048576",
            "index": "sense",
        }
    }
    script = installed_app / "bin" / "sense_listener.py"

    def start():
        return modinput.start(
            script, stanza, server_uri=splunkd.server_uri, session_key=splunkd.session_key
        )

    return start, port, script, stanza


def wait_listening(port: int, running=None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running is not None and not running.running:
            raise AssertionError(f"the input exited: {running.stderr[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("the listener did not open its port")


def sender(pki, port, **kwargs) -> SenseSender:
    from harness.certs import client_ssl_context

    kwargs.setdefault("key_name", KEY_NAME)
    kwargs.setdefault("key_value", KEY_VALUE)
    return SenseSender(
        f"https://localhost:{port}/sense", ssl_context=client_ssl_context(pki.ca), **kwargs
    )


def test_reports_indexed_once_across_restarts_and_sigterm_finishes_the_request(
    listener_input, pki, splunkd, secret_scan, splunk_home
):
    secret_scan.add(KEY_VALUE, name="sense api key")
    start, port, _, _ = listener_input
    report = make_report(300, message_id="1539105912220")
    with start() as running:
        wait_listening(port, running)
        answer = sender(pki, port).send_report(report, "as_sense_sample")
        assert (answer.status, answer.body["events"]) == (200, 301)
        events = running.wait_for(301, timeout=20)
        assert sender(pki, port).send_report(report, "object").body["status"] == "duplicate"
        assert sender(pki, port, key_value="nope").send_report(report).status == 401

        # SIGTERM while a request is half sent: it finishes, is indexed, then the exit
        second = encode(make_report(5, message_id="term"), "text_string")
        head = (
            f"POST /sense HTTP/1.1\r\nHost: localhost\r\n{KEY_NAME}: {KEY_VALUE}\r\n"
            f"Content-Length: {len(second)}\r\n\r\n"
        ).encode()
        from harness.certs import client_ssl_context

        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn = client_ssl_context(pki.ca).wrap_socket(raw, server_hostname="localhost")
        conn.sendall(head + second[:100])
        time.sleep(0.3)
        running.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert running.running  # finishing the request in flight
        conn.sendall(second[100:])
        answer = conn.recv(4096)
        conn.close()
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert running.wait(timeout=15) == 0
        result = running.result()
    secret_scan.watch("sense_listener run", result)
    events = result.events
    assert len(events) == 301 + 6
    bots = [e for e in events if e.sourcetype == "apigee:sense:bot"]
    assert len(bots) == 300 + 5
    first = bots[0]
    assert (first.index, first.source) == ("sense", "sense_listener://hf1")
    assert first.time == pytest.approx(1539105912.0)
    data = first.json()
    assert data["message_id"] == "1539105912220" and isinstance(data["call_count"], int)
    assert "T" in data["bot_detected_last"]  # the sample's missing T restored
    assert splunkd.kv_records(COLLECTION), "the ledger is kept in the KV store"

    # a new process (splunkd restarts inputs with interval = 0): the repeat is refused
    with start() as again:
        wait_listening(port, again)
        answer = sender(pki, port).send_report(report, "body_and_text_string")
        assert (answer.status, answer.body["status"]) == (200, "duplicate")
        assert again.terminate(timeout=15) == 0
        assert again.result().events == []
    log = (splunk_home / "var" / "log" / "splunk" / "ta_mailsec_sense_listener_hf1.log").read_text()
    assert "action=report_indexed" in log and "action=request_rejected status=401" in log


def test_the_listener_exits_when_its_parent_splunkd_is_gone(
    listener_input, splunkd, splunk_home, tmp_path
):
    _, port, script, stanza = listener_input
    document = modinput.input_xml(
        stanza,
        input_type="sense_listener",
        server_uri=splunkd.server_uri,
        session_key=splunkd.session_key,
        checkpoint_dir=str(tmp_path),
    )
    # a stand-in splunkd: starts the input as a child, then is killed with SIGKILL
    parent_code = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen({modinput.script_argv(script)!r}, cwd={str(script.parent)!r},"
        " stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,"
        f" env={modinput.script_env(splunk_home)!r})\n"
        f"child.stdin.write({document!r}); child.stdin.close()\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        child = int(parent.stdout.readline())
        wait_listening(port)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _alive(child):
            time.sleep(0.1)
        assert not _alive(child), "the listener outlived its parent"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1)
    finally:
        if parent.poll() is None:
            parent.kill()
        # the parent's process group: the listener too, should the test have failed
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_configuration_without_the_stored_key_is_refused_with_the_field_named(
    installed_app, splunkd, pki, splunk_home
):
    stanza = {
        "sense_listener://nokey": {
            "port": str(free_port()),
            "tls_cert_file": str(pki.cert_file),
            "tls_key_file": str(pki.key_file),
            "api_key_value": "******",
        }
    }
    result = modinput.run(
        installed_app / "bin" / "sense_listener.py",
        stanza,
        server_uri=splunkd.server_uri,
        session_key=splunkd.session_key,
    )
    assert result.events == []
    logs = (splunk_home / "var" / "log" / "splunk").glob("*sense_listener_nokey*")
    text = "".join(path.read_text() for path in logs)
    assert "api_key_value: the stored key could not be read" in text
