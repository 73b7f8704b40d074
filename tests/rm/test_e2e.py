"""The installed add-on's bin/rm_send_mail.py run as splunkd runs it: `--execute`,
the JSON payload on stdin, a gzipped results file, the account in the splunkd
stand-in, the mail over mutual TLS to the RM simulator."""

from __future__ import annotations

import base64
import json

import pytest

from harness import modinput
from harness.alert import run_alert
from harness.proxy import ConnectProxy
from mailsec.adapters.settings import RM_PEM_CACHE_REALM as CACHE_REALM
from mailsec.rm import pem_cache
from rm.conftest import P12_PASSWORD, SENDER, leftover_cert_dirs, read_stash

pytestmark = pytest.mark.slow


@pytest.fixture
def script(installed_app):
    return installed_app / "bin" / "rm_send_mail.py"


@pytest.fixture
def account(sim, client_cert, ca, splunkd, secret_scan):
    p12 = base64.b64encode(client_cert.to_pkcs12(P12_PASSWORD.encode())).decode()
    fields = {
        "hostname": sim.hostname,
        "whitelist_name": "SplunkAlerts",
        "client_certificate": p12,
        "certificate_password": P12_PASSWORD,
        "ca_bundle": ca.cert_pem.decode(),
    }
    splunkd.add_account(
        "rm_account", "rm1", fields, encrypted=("client_certificate", "certificate_password")
    )
    secret_scan.add(P12_PASSWORD, name="certificate password")
    secret_scan.add(p12, name="PKCS#12")
    secret_scan.add(client_cert.key_pem.decode(), name="client key")
    return fields


CONFIGURATION = {
    "account": "rm1",
    "to": "Ops@Corp.Example, noc@corp.example",
    "subject": "Splunk alert: failed logins",
    "text": "Failed logins above threshold.",
    "html": "<p>Failed logins above threshold.</p>",
    "important": "1",
    "include_results": "table",
    "max_rows": "2",
    "result_index": "mail_audit",
}
RESULTS = [
    {"user": "alice", "src": ["10.0.0.1", "10.0.0.2"], "note": "<b>bold</b> & more"},
    {"user": "bob", "src": "10.0.0.3", "note": "ok"},
    {"user": "carol", "src": "10.0.0.4", "note": "cut by max_rows"},
]


def run(script, splunkd, splunk_home, tmp_path, configuration=None, **kwargs):
    private_tmp = tmp_path / "script_tmp"
    private_tmp.mkdir(exist_ok=True)
    result = run_alert(
        script,
        configuration={**CONFIGURATION, **(configuration or {})},
        results=RESULTS,
        server_uri=splunkd.server_uri,
        session_key=kwargs.pop("session_key", splunkd.session_key),
        search_name="Failed logins",
        splunk_home=splunk_home,
        env={"TMPDIR": str(private_tmp), **kwargs.pop("env", {})},
        timeout=60,
        **kwargs,
    )
    headers, events = read_stash(splunk_home)
    assert leftover_cert_dirs(private_tmp) == []
    assert "Traceback" not in result.stderr and "Traceback" not in result.log_text()
    return result, headers, events


def test_real_payload_with_gzipped_results(
    script, sim, account, splunkd, splunk_home, tmp_path, secret_scan
):
    result, headers, [event] = run(script, splunkd, splunk_home, tmp_path)
    secret_scan.watch("alert run", result)
    secret_scan.watch("outcome event", json.dumps(event))
    result.assert_ok()
    assert headers == ["***SPLUNK*** index=mail_audit sourcetype=rm:mail:send source=rm_send_mail"]
    assert event["code"] == "DONE" and event["range"] == "dispatch"
    assert event["search_name"] == "Failed logins" and event["sid"] == result.payload["sid"]
    assert event["recipient_count"] == 2 and event["recipient_domains"] == ["corp.example"]
    assert event["result_rows"] == 2
    [mail] = sim.mailbox
    assert mail["toAddresses"] == ["ops@corp.example", "noc@corp.example"]
    assert "alice" in mail["text"] and "10.0.0.1, 10.0.0.2" in mail["text"]
    assert "carol" not in mail["text"]
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; more" in mail["html"]
    log = result.log_text()
    assert 'code="DONE"' in log and "lower-cased" in log


def test_wrong_certificate_password_is_a_clear_event(
    script, sim, account, splunkd, splunk_home, tmp_path
):
    splunkd.add_account(
        "rm_account",
        "rm1",
        {**account, "certificate_password": "not-the-password"},
        encrypted=("client_certificate", "certificate_password"),
    )
    result, _, [event] = run(script, splunkd, splunk_home, tmp_path)
    assert result.returncode == 2
    assert event["code"] == "CERTIFICATE_PASSWORD_WRONG"
    assert "password" in event["action_to_take"]
    assert sim.connections == 0


def test_local_validation_reaches_nothing(script, sim, account, splunkd, splunk_home, tmp_path):
    result, _, [event] = run(script, splunkd, splunk_home, tmp_path, {"subject": ""})
    assert result.returncode == 2
    assert event["code"] == "SUBJECT_IS_NOT_ALLOWED_TO_BE_EMPTY"
    assert sim.connections == 0 and sim.requests == []


def test_rm_refusal_exit_status(script, sim, account, splunkd, splunk_home, tmp_path):
    sim.registry.whitelist[0].ip = "192.0.2.10"
    result, _, [event] = run(script, splunkd, splunk_home, tmp_path)
    assert result.returncode == 3
    assert event["code"] == "HAS_PERMISSION_HAS_WHITELIST_MATCH_NAME_BUT_IP_MISMATCH"
    assert "IP address" in event["action_to_take"]


def test_bad_session_key_is_reported_quickly(script, sim, account, splunkd, splunk_home, tmp_path):
    result, _, [event] = run(script, splunkd, splunk_home, tmp_path, session_key="expired")
    assert result.returncode == 2 and event["code"] == "ACCOUNT_INVALID"
    assert result.duration < 10  # no solnlib 1+2+4 s retry on a splunkd error


def test_mail_goes_through_the_proxy_tab(script, sim, account, splunkd, splunk_home, tmp_path):
    with ConnectProxy(required_credentials="proxyuser:proxy-Secret-1") as proxy:
        splunkd.set_settings(
            "proxy",
            {
                "proxy_enabled": "1",
                "proxy_type": "http",
                "proxy_url": "127.0.0.1",
                "proxy_port": str(proxy.port),
                "proxy_username": "proxyuser",
                "proxy_password": "proxy-Secret-1",
            },
            encrypted=("proxy_password",),
        )
        result, _, [event] = run(script, splunkd, splunk_home, tmp_path)
    result.assert_ok()
    assert event["code"] == "DONE"
    assert proxy.seen == [("CONNECT", sim.hostname, "proxyuser:proxy-Secret-1")]


def test_needs_the_execute_flag(script, splunk_home):
    import subprocess

    done = subprocess.run(
        modinput.script_argv(script), capture_output=True, text=True, timeout=30, input=""
    )
    assert done.returncode == 1 and "--execute" in done.stderr


def phases(result) -> dict:
    [line] = [x for x in result.stderr.splitlines() if x.startswith('{"phases_ms"')]
    return json.loads(line)["phases_ms"]


def test_certificate_cache_across_runs(
    script, sim, account, splunkd, splunk_home, tmp_path, secret_scan, client_cert, ca
):
    """The first mail stores the PEM form in storage/passwords; the next one reads it
    (its own entry only, after the account's) and never loads cryptography; a new
    PKCS#12 replaces it."""
    timed = {"TA_MAILSEC_RM_TIMINGS": "1"}
    first, _, [event] = run(script, splunkd, splunk_home, tmp_path, env=timed)
    first.assert_ok()
    assert phases(first)["certificate_source"] == "pkcs12"
    assert phases(first)["certificate_cached"] is True
    stored = json.loads(splunkd.get_password(CACHE_REALM, "rm1"))
    assert stored["p12_sha256"] == pem_cache.fingerprint(account["client_certificate"])
    assert stored["key_pem_encrypted"].startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")

    splunkd.clear_log()
    second, _, [event] = run(script, splunkd, splunk_home, tmp_path, env=timed)
    second.assert_ok()
    assert event["code"] == "DONE" and event["sender"] == SENDER
    assert phases(second)["certificate_source"] == "cache"
    assert phases(second)["cryptography_imported"] is False
    calls = [(r.method, r.path.rsplit("/", 1)[-1]) for r in splunkd.requests_log]
    assert calls == [
        ("GET", "rm1"),
        ("GET", "passwords"),  # the account's secrets
        ("GET", "conf-ta_mailsec_settings"),
        ("GET", "passwords"),  # its certificate cache entry
    ]

    renewed = ca.issue_client("splunk-rm", email=SENDER)
    p12 = base64.b64encode(renewed.to_pkcs12(P12_PASSWORD.encode())).decode()
    secret_scan.add(p12, name="renewed PKCS#12")
    secret_scan.add(renewed.key_pem.decode(), name="renewed key")
    splunkd.add_account(
        "rm_account",
        "rm1",
        {**account, "client_certificate": p12},
        encrypted=("client_certificate", "certificate_password"),
    )
    third, _, [event] = run(script, splunkd, splunk_home, tmp_path, env=timed)
    third.assert_ok()
    assert phases(third)["certificate_source"] == "pkcs12"
    assert json.loads(splunkd.get_password(CACHE_REALM, "rm1"))["p12_sha256"] == (
        pem_cache.fingerprint(p12)
    )
    for result in (first, second, third):
        secret_scan.watch("alert run", result)
    assert len(sim.mailbox) == 3


def test_the_action_reads_only_its_account_the_proxy_and_its_certificate_cache(
    script, sim, account, splunkd, splunk_home, tmp_path
):
    """Least privilege (docs/security.md): every other secret of the add-on is in
    storage/passwords too, and none of it reaches the action's process."""
    from mailsec.adapters.settings import addon_realm, conf_realm, input_realm
    from mailsec.adapters.stored_secrets import split_chunk

    splunkd.add_account("rm_account", "rm2", {**account}, encrypted=("certificate_password",))
    splunkd.add_account(
        "ser_account", "rm1", {"client_secret": "ser"}, encrypted=("client_secret",)
    )
    splunkd.add_account(
        "google_account", "g", {"pgp_passphrase": "pgp"}, encrypted=("pgp_passphrase",)
    )
    splunkd.add_input_secrets("sense_listener", "rm1", {"api_key_value": "sense"})
    splunkd.state.store_credential(addon_realm("token_cache"), "ser_report.rm1.token", "tok")
    splunkd.set_settings(
        "proxy",
        {"proxy_enabled": "0", "proxy_url": "p.example", "proxy_password": "proxy-pass"},
        encrypted=("proxy_password",),
    )
    allowed = {
        (conf_realm("ta_mailsec_rm_account"), "rm1"),
        (conf_realm("ta_mailsec_settings"), "proxy"),
        (CACHE_REALM, "rm1"),
    }
    for attempt in ("converts the PKCS#12 and caches it", "reads the cache"):
        splunkd.clear_log()
        _result, _, [event] = run(script, splunkd, splunk_home, tmp_path)
        assert event["code"] == "DONE", attempt
        served = {(realm, split_chunk(user)[0]) for realm, user in splunkd.passwords_served}
        assert served <= allowed, attempt
        assert (conf_realm("ta_mailsec_rm_account"), "rm1") in served
    assert (input_realm("sense_listener"), "rm1") not in served


def test_a_refused_handshake_is_retried_by_the_script(
    script, sim, account, splunkd, splunk_home, tmp_path
):
    sim.fail_next("refuse_handshake")
    result, _, [event] = run(script, splunkd, splunk_home, tmp_path)
    result.assert_ok()
    assert event["code"] == "DONE" and event["attempts"] == 2
    assert len(sim.mailbox) == 1 and sim.connections == 2
    assert "retry in" in result.log_text()  # the refused attempt is logged
