"""A clean run writes nothing to stderr, for every input and the alert action
(docs/operations.md): splunkd logs each stderr line of a script as an ERROR in
splunkd.log, so a library's traceback for an expected condition (a token cache entry
that does not exist yet) is a false alarm in every customer's splunkd.log.

Each part's scripts run as splunkd runs them (the installed add-on, XML or the alert
payload on stdin) against its simulator and the splunkd stand-in, starting from
nothing (no checkpoint, no cached token, no cached certificate) and then once more.
A new part adds one function `(PartEnv) -> [(label, stderr)]` and one line to PARTS.
"""

from __future__ import annotations

import base64
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import modinput
from harness.alert import read_conf, run_alert
from harness.certs import TestCA, client_ssl_context

pytestmark = pytest.mark.slow


@dataclass
class PartEnv:
    splunkd: object
    splunk_home: Path
    app: Path
    ca: TestCA
    tmp: Path

    def script(self, name: str) -> Path:
        return self.app / "bin" / name

    @property
    def where(self) -> dict:
        return dict(
            server_uri=self.splunkd.server_uri,
            session_key=self.splunkd.session_key,
            splunk_home=self.splunk_home,
        )


def ser_report(env: PartEnv) -> list:
    from ser.simulator import SerSimulator, SimClock

    from mailsec.core.timeutil import iso_z

    hour = 3600
    with SerSimulator(env.ca, clock=SimClock(time.time())) as sim:
        env.splunkd.add_account(
            "ser_account", "acme", sim.account_fields(), encrypted={"client_secret"}
        )
        start = int(time.time() // hour * hour - 4 * hour)
        stanza = {"ser_report://main": {
            "account": "acme", "index": "main", "interval": "300", "window": "1h",
            "start_date": iso_z(start),
        }}  # fmt: skip
        out = []
        for label in ("first run: no token cached", "second run: cached token"):
            result = modinput.run(env.script("ser_report.py"), stanza, timeout=120, **env.where)
            result.assert_clean_exit()
            out.append((label, result.stderr))
        assert sim.summary_requests > 0
        assert sim.token_requests == 1  # the second run did use the cache
        return out


def ser_usage(env: PartEnv) -> list:
    from ser.simulator import SimClock
    from ser_usage.simulator import SerUsageSimulator

    from mailsec.core.timeutil import iso_z

    day = 86400
    with SerUsageSimulator(env.ca, clock=SimClock(time.time()), relay_users=20) as sim:
        env.splunkd.add_account(
            "ser_account", "acme", sim.account_fields(), encrypted={"client_secret"}
        )
        stanza = {"ser_usage://main": {
            "account": "acme", "index": "main", "interval": "3600",
            "start_date": iso_z(time.time() - 3 * day)[:10],
        }}  # fmt: skip
        out = []
        for label in ("first run: no token cached", "second run: cached token"):
            result = modinput.run(env.script("ser_usage.py"), stanza, timeout=120, **env.where)
            result.assert_clean_exit()
            out.append((label, result.stderr))
        assert sim.data_requests > 0
        assert sim.token_requests == 1  # the second run did use the cache
        return out


def sense_listener(env: PartEnv) -> list:
    from sense.sender import SenseSender, make_report

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cert, key = env.ca.issue_server(("localhost", "127.0.0.1")).write(env.tmp, "listener")
    env.splunkd.add_input_secrets("sense_listener", "main", {"api_key_value": "k-123"})
    stanza = {"sense_listener://main": {
        "interval": "0", "port": str(port), "bind_address": "127.0.0.1",
        "tls_cert_file": str(cert), "tls_key_file": str(key),
        "api_key_name": "X-API-Key", "api_key_value": "******", "index": "main",
    }}  # fmt: skip
    sender = SenseSender(
        f"https://localhost:{port}/sense",
        key_name="X-API-Key",
        key_value="k-123",
        ssl_context=client_ssl_context(env.ca),
    )
    with modinput.start(env.script("sense_listener.py"), stanza, **env.where) as running:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline and running.running, running.stderr
                time.sleep(0.1)
        assert sender.send_report(make_report(3, message_id="clean-1")).status == 200
        running.wait_for(4, timeout=20)
        assert running.terminate(timeout=20) == 0
        return [("listen, one report, SIGTERM", running.stderr)]


def audit_export(env: PartEnv) -> list:
    from audit.simulator import AuditSimulator, gpg_keypair

    passphrase = "clean stderr passphrase"
    with tempfile.TemporaryDirectory(prefix="cs_keys_") as home:
        public, private = gpg_keypair(home, "Clean <audit@example.com>", passphrase)
    work = tempfile.mkdtemp(prefix="cs_", dir="/tmp")  # short: gpg-agent's socket path
    try:
        with AuditSimulator(env.ca, polls_until_done=1, marked_delete_times=1) as sim:
            env.splunkd.add_account(
                "google_account",
                "google",
                sim.account_fields(public, private, passphrase),
                encrypted=("service_account_json", "pgp_private_key", "pgp_passphrase"),
            )
            stanza = {"audit_export://mailboxes": {
                "account": "google", "users": "alice,bob", "index": "main", "interval": "900",
            }}  # fmt: skip
            out = []
            for label in ("first run: no token cached", "second run"):
                result = modinput.run(
                    env.script("audit_export.py"),
                    stanza,
                    env={"TMPDIR": work},
                    timeout=120,
                    **env.where,
                )
                result.assert_clean_exit()
                out.append((label, result.stderr))
            return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rm_send_mail(env: PartEnv) -> list:
    from rm.simulator import RmSimulator, standard_setup

    password = "clean-P12-password"
    registry, client = standard_setup(env.ca)
    with RmSimulator(env.ca, registry=registry) as sim:
        p12 = base64.b64encode(client.to_pkcs12(password.encode())).decode()
        env.splunkd.add_account(
            "rm_account",
            "rm1",
            {"hostname": sim.hostname, "whitelist_name": "SplunkAlerts",
             "client_certificate": p12, "certificate_password": password,
             "ca_bundle": env.ca.cert_pem.decode()},
            encrypted=("client_certificate", "certificate_password"),
        )  # fmt: skip
        configuration = {
            "account": "rm1", "to": "ops@corp.example", "subject": "Clean run",
            "text": "One mail.", "include_results": "none", "result_index": "main",
        }  # fmt: skip
        out = []
        for label in ("first mail: no certificate cached", "second mail: cached certificate"):
            result = run_alert(
                env.script("rm_send_mail.py"),
                configuration=configuration,
                results=[{"user": "alice"}],
                timeout=60,
                **env.where,
            )
            result.assert_ok()
            out.append((label, result.stderr))
        assert len(sim.mailbox) == 2
        return out


PARTS = [
    pytest.param(ser_report, id="ser_report"),
    pytest.param(ser_usage, id="ser_usage"),
    pytest.param(sense_listener, id="sense_listener"),
    pytest.param(audit_export, id="audit_export"),
    pytest.param(rm_send_mail, id="rm_send_mail"),
]


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.create("clean stderr CA")


@pytest.mark.parametrize("part", PARTS)
def test_a_clean_run_writes_nothing_to_stderr(
    part, installed_app, splunkd, splunk_home, ca, tmp_path
):
    # splunkd serves the add-on's default/*.conf: here, the settings tabs' defaults
    shipped = read_conf(installed_app / "default" / "ta_mailsec_settings.conf")
    for stanza, fields in shipped.items():
        splunkd.set_conf("ta_mailsec_settings", stanza, fields)
    runs = part(PartEnv(splunkd, splunk_home, installed_app, ca, tmp_path))
    assert runs
    dirty = [f"--- {label}:\n{stderr}" for label, stderr in runs if stderr]
    assert not dirty, "stderr of a clean run:\n" + "\n".join(dirty)
