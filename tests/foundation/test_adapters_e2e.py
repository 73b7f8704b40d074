"""The adapters through the real modular-input protocol, splunklib and solnlib,
against the splunkd stand-in: an input reads an encrypted account field and an
input secret, writes a well-formed event stream, checkpoints in the KV store, logs
for the monitoring dashboard, and leaks no secret."""

from __future__ import annotations

import hashlib
import textwrap

import pytest

from harness import modinput

PROBE = textwrap.dedent(
    '''
    """A probe input built on the add-on's adapters, as a service helper module is."""
    import hashlib
    import sys

    import import_declare_test  # noqa: F401
    from splunklib import modularinput as smi

    from mailsec.adapters.modinput import run_inputs
    from mailsec.core.events import build_event


    def service(run):
        account = run.load_account("ser_account", run.params["account"])
        secrets = run.input_secrets()
        state = run.checkpoints.get(run.name) or {"runs": 0}
        digest = hashlib.sha256(account["client_secret"].encode()).hexdigest()
        run.logger.info("probe run %d for client %s", state["runs"], account["client_id"])
        run.sink.write([build_event(
            "mailsec:probe", 1700000000.25,
            {"client_id": account["client_id"], "secret_sha256": digest,
             "has_input_secret": bool(secrets.get("api_key_value")), "run": state["runs"]},
            natural_key=(run.name, state["runs"]),
        )])
        run.checkpoints.save(run.name, {"runs": state["runs"] + 1})


    class Probe(smi.Script):
        def get_scheme(self):
            scheme = smi.Scheme("probe")
            scheme.add_argument(smi.Argument("account"))
            return scheme

        def stream_events(self, inputs, writer):
            run_inputs("probe", inputs, writer, service)


    if __name__ == "__main__":
        sys.exit(Probe().run(sys.argv))
    '''
)
SECRET = "s3cr3t-client-secret-value-Ü"
INPUT_SECRET = "input-api-key-value-123456"


@pytest.fixture
def probe_app(installed_app):
    script = installed_app / "bin" / "probe.py"
    script.write_text(PROBE)
    return script


def test_input_reads_encrypted_fields_writes_stream_and_checkpoints(
    probe_app, splunk_home, splunkd, secret_scan
):
    secret_scan.add(SECRET)
    secret_scan.add(INPUT_SECRET)
    splunkd.add_account(
        "ser_account",
        "acct1",
        {"client_id": "cid-42", "client_secret": SECRET},
        encrypted={"client_secret"},
    )
    splunkd.add_input_secrets("probe", "p1", {"api_key_value": INPUT_SECRET})
    stanzas = {"probe://p1": {"account": "acct1", "index": "mail"}}
    kwargs = dict(
        server_uri=splunkd.server_uri, session_key=splunkd.session_key, splunk_home=splunk_home
    )

    first = modinput.run(probe_app, stanzas, **kwargs)
    second = modinput.run(probe_app, stanzas, **kwargs)

    assert first.returncode == 0, first.stderr
    events = first.events + second.events
    assert [e.json()["run"] for e in events] == [0, 1]  # the checkpoint carried over
    event = events[0]
    assert (event.sourcetype, event.index, event.source) == ("mailsec:probe", "mail", "probe://p1")
    assert event.time == pytest.approx(1700000000.25)
    data = event.json()
    assert data["client_id"] == "cid-42"
    assert data["secret_sha256"] == hashlib.sha256(SECRET.encode()).hexdigest()
    assert data["has_input_secret"] is True
    assert data["time"] == "2023-11-14T22:13:20.250000Z"
    assert splunkd.kv_records("ta_mailsec_probe_checkpoints")["p1"]
    log = (splunk_home / "var" / "log" / "splunk" / "ta_mailsec_probe_p1.log").read_text()
    assert "action=events_ingested" in log and "sourcetype_ingested=mailsec:probe" in log
    assert "action=run_succeeded" in log
    for text in (first.stderr, second.stderr):
        secret_scan.scan_text("stderr", text)
    secret_scan.scan_events(events)


def test_a_missing_account_is_a_logged_configuration_error_not_a_crash(
    probe_app, splunk_home, splunkd
):
    result = modinput.run(
        probe_app,
        {"probe://p2": {"account": "nope"}},
        server_uri=splunkd.server_uri,
        session_key=splunkd.session_key,
    )
    assert result.events == []
    log = (splunk_home / "var" / "log" / "splunk" / "ta_mailsec_probe_p2.log").read_text()
    assert "Configuration error in probe://p2: account: no ser_account named 'nope'" in log


def test_removing_an_input_deletes_its_checkpoint(splunkd, monkeypatch):
    """What the inputs' REST handler does inside splunkd before UCC removes the input."""
    import logging

    from mailsec.adapters.kvstore import KVStoreCheckpointStore, delete_checkpoint_on_input_removal
    from mailsec.adapters.splunkd import Splunkd

    monkeypatch.setenv("SPLUNKD_URI", splunkd.server_uri)
    store = KVStoreCheckpointStore(
        Splunkd(splunkd.server_uri, splunkd.session_key), "ta_mailsec_ser_report_checkpoints"
    )
    store.save("old_name", {"next": "2024-01-01T00:00:00Z"})
    store.save("other", {"next": "2024-01-01T00:00:00Z"})
    from mailsec.adapters.secret_cache import StoragePasswordsCache

    connection = Splunkd(splunkd.server_uri, splunkd.session_key)
    old_tokens = StoragePasswordsCache(connection, owner="ser_report.old_name")
    old_tokens.set("ser_access_token", "tok-" + "x" * 300)  # long: stored in chunks
    other_tokens = StoragePasswordsCache(connection, owner="ser_report.other")
    other_tokens.set("ser_access_token", "tok-other")
    logger = logging.getLogger("test.rh")
    assert delete_checkpoint_on_input_removal(splunkd.session_key, "ser_report", "old_name", logger)
    assert store.get("old_name") is None
    assert old_tokens.get("ser_access_token") is None
    assert store.get("other") is not None  # only that input's state
    assert other_tokens.get("ser_access_token") == "tok-other"


def test_removing_a_listener_forgets_the_message_ids_it_remembers(splunkd, monkeypatch):
    import logging
    from datetime import datetime, timezone

    from mailsec.adapters.kvstore import KVStoreCheckpointStore, delete_checkpoint_on_input_removal
    from mailsec.adapters.splunkd import Splunkd
    from mailsec.sense.dedupe import COLLECTION, MessageLedger, forget_listener

    monkeypatch.setenv("SPLUNKD_URI", splunkd.server_uri)
    store = KVStoreCheckpointStore(Splunkd(splunkd.server_uri, splunkd.session_key), COLLECTION)
    ledger = MessageLedger(store, "edge")
    assert ledger.record("report-1")
    other = MessageLedger(store, "other")
    assert other.record("report-1")
    delete_checkpoint_on_input_removal(
        splunkd.session_key,
        "sense_listener",
        "edge",
        logging.getLogger("t"),
        forget_state=forget_listener,  # what SenseListenerInputHandler passes
    )
    day = datetime.now(timezone.utc).date().isoformat()
    assert store.get(f"edge.{day}") is None
    assert not MessageLedger(store, "edge").seen("report-1")  # a new input with the old name
    assert MessageLedger(store, "other").seen("report-1")  # another listener keeps its own
