"""audit_export as splunkd runs it: the built add-on's script, XML on stdin, the
splunkd stand-in for the account, its secrets and the KV store, the simulator over
real TLS, the real gpg. Killed with SIGKILL mid-run and restarted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import tempfile
import time
from datetime import datetime, timedelta, timezone

import pytest

from audit.conftest import PASSPHRASE, sleepers
from audit.simulator import AuditSimulator
from harness import modinput

pytestmark = pytest.mark.slow
MESSAGE = "google:workspace:mailbox:message"
EXPORT = "google:workspace:audit:export"
SECRET_FIELDS = ("service_account_json", "pgp_private_key", "pgp_passphrase")


@pytest.fixture
def live_sim(ca):
    # the script runs in its own process on the real clock: complete on the first poll
    with AuditSimulator(ca, polls_until_done=1, marked_delete_times=1) as simulator:
        yield simulator


@pytest.fixture
def tmpdir_env():
    """TMPDIR for the script: its private work folder is made there, so what it
    leaves behind can be checked on disk."""
    path = tempfile.mkdtemp(prefix="ae_", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def configure(splunkd, sim, pgp_keys, secret_scan) -> None:
    fields = sim.account_fields(pgp_keys[0], pgp_keys[1], PASSPHRASE)
    splunkd.add_account("google_account", "google", fields, encrypted=SECRET_FIELDS)
    secret_scan.add(json.loads(sim.sa_json)["private_key"], name="service account key")
    secret_scan.add(pgp_keys[1], name="pgp private key")
    secret_scan.add(PASSPHRASE, name="pgp passphrase")


def run_script(installed_app, splunkd, splunk_home, tmpdir_env, **kwargs):
    stanzas = {"audit_export://mailboxes": {
        "account": "google", "users": "alice,bob", "index": "mail", "interval": "900",
    }}  # fmt: skip
    return modinput.run(
        installed_app / "bin" / "audit_export.py",
        stanzas,
        server_uri=splunkd.server_uri,
        session_key=splunkd.session_key,
        splunk_home=splunk_home,
        env={"TMPDIR": tmpdir_env},
        timeout=120,
        **kwargs,
    )


def files_left(root: str) -> list:
    """What the input left in TMPDIR, apart from the HTTP client's CA bundles
    (ta_mailsec_ca_bundles_<uid>/<sha256>.pem: public certificates every run reuses)."""
    found = []
    for base, dirs, files in os.walk(root):
        if os.path.basename(base).startswith("ta_mailsec_ca_bundles"):
            continue
        for name in files:
            path = os.path.join(base, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                found.append(path)
        found += [os.path.join(base, d) for d in dirs if not d.startswith("ta_mailsec_ca_bundles")]
    return found


def expected_ids(sim) -> set:
    return {f"<{s.message_id}>" for specs in sim.expected_specs().values() for s in specs}


def test_full_run_through_the_real_script(
    installed_app, splunkd, splunk_home, live_sim, pgp_keys, secret_scan, tmpdir_env
):
    configure(splunkd, live_sim, pgp_keys, secret_scan)
    result = run_script(installed_app, splunkd, splunk_home, tmpdir_env)
    result.assert_clean_exit()
    messages = [e for e in result.events if e.sourcetype == MESSAGE]
    assert {e.json()["message_id"] for e in messages} == expected_ids(live_sim)
    assert len(messages) == len({e.json()["event_id"] for e in messages}) == 18
    for event in messages:
        assert event.index == "mail" and event.source == "audit_export://mailboxes"
    actions = sorted(e.json()["action"] for e in result.events if e.sourcetype == EXPORT)
    assert actions.count("deleted") == 2 and actions.count("decrypted") == 4
    state = splunkd.kv_records("ta_mailsec_audit_export_checkpoints")["mailboxes"]
    assert json.loads(state["state"])["requests"] == {}
    budget = splunkd.kv_records("ta_mailsec_audit_budget")
    assert len(budget) == 2 and all(key.startswith("example.com|") for key in budget)
    assert files_left(tmpdir_env) == []
    log = splunk_home / "var" / "log" / "splunk" / "ta_mailsec_audit_export_mailboxes.log"
    text = log.read_text()
    assert "action=events_ingested" in text and "audit_progress" in text
    secret_scan.watch("audit_export run", result)
    secret_scan.scan_text("stderr", result.stderr)
    secret_scan.scan_events(result.events)


def test_sigkill_mid_file_then_restart_every_message_once(
    installed_app, splunkd, splunk_home, live_sim, pgp_keys, secret_scan, tmpdir_env
):
    """SIGKILL after the first message events (mid-file, before or after their
    checkpoint), then again on the next run; the last run finishes the job."""
    live_sim.messages_per_export = 30
    configure(splunkd, live_sim, pgp_keys, secret_scan)
    seen = []
    for kill_at in (1, 25, None):

        def kill_when(events, kill_at=kill_at):
            return kill_at is not None and sum(e.sourcetype == MESSAGE for e in events) >= kill_at

        result = run_script(installed_app, splunkd, splunk_home, tmpdir_env, kill_when=kill_when)
        seen += result.events
        if kill_at is not None:
            assert result.returncode != 0  # it was killed
    by_id = {}
    for event in seen:
        if event.sourcetype == MESSAGE:
            data = event.json()
            assert by_id.setdefault(data["event_id"], data["message_id"]) == data["message_id"]
    assert sorted(by_id.values()) == sorted(expected_ids(live_sim))
    assert len(by_id) == 60
    assert live_sim.calls["create"] == 2  # the killed runs' requests were not made again
    assert files_left(tmpdir_env) == []  # the killed runs' leftovers were swept
    secret_scan.scan_events(seen)


BUDGET = "ta_mailsec_audit_budget"


def test_budget_records_of_old_days_are_deleted(
    installed_app, splunkd, splunk_home, live_sim, pgp_keys, secret_scan, tmpdir_env
):
    configure(splunkd, live_sim, pgp_keys, secret_scan)
    today = datetime.now(timezone.utc)

    def day(back: int) -> str:
        return (today - timedelta(days=back)).strftime("%Y-%m-%d")

    claim = {"state": json.dumps({"owner": "old", "nonce": "n", "purpose": "p", "at": 0})}
    old = [
        f"example.com|{day(40)}|000",
        f"example.com|{day(2)}|007",
        f"example.com|{day(3)}|exhausted",
    ]
    kept = [
        f"example.com|{day(1)}|000",
        f"other.example|{day(40)}|000",
        f"example.com.au|{day(9)}|000",
    ]
    for key in old + kept:
        splunkd.kv_put(BUDGET, {"_key": key, **claim})

    result = run_script(installed_app, splunkd, splunk_home, tmpdir_env)
    result.assert_clean_exit()
    records = splunkd.kv_records(BUDGET)
    assert not set(old) & set(records)
    assert set(kept) <= set(records)
    today_records = [key for key in records if key.startswith(f"example.com|{day(0)}|")]
    assert len(today_records) == 2  # this run's two reservations


def test_sigterm_stops_the_script_while_gpg_hangs(
    installed_app,
    splunkd,
    splunk_home,
    live_sim,
    pgp_keys,
    secret_scan,
    tmpdir_env,
    hanging_gpg_dir,
):
    """splunkd sends SIGTERM when the input is disabled or splunkd stops: the input
    must end promptly (and take its gpg with it), not wait on gpg for ever."""
    configure(splunkd, live_sim, pgp_keys, secret_scan)
    before = sleepers(hanging_gpg_dir)

    def downloaded(events) -> bool:
        return any(e.sourcetype == EXPORT and '"downloaded"' in e.data for e in events)

    path = f"{hanging_gpg_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    started = time.monotonic()
    stanzas = {
        "audit_export://mailboxes": {"account": "google", "users": "alice", "interval": "900"}
    }
    result = modinput.run(
        installed_app / "bin" / "audit_export.py",
        stanzas,
        server_uri=splunkd.server_uri,
        session_key=splunkd.session_key,
        splunk_home=splunk_home,
        env={"TMPDIR": tmpdir_env, "PATH": path},
        timeout=120,
        kill_when=downloaded,
        kill_signal=signal.SIGTERM,
    )
    assert result.killed and result.returncode == 0, result.stderr[-2000:]
    assert time.monotonic() - started < 60
    assert not result.orphaned_children
    assert sleepers(hanging_gpg_dir) - before == set()
    assert "gnupg" not in result.stderr  # killing gpg is not a library warning on stderr
