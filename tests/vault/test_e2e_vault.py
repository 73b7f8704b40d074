"""vault_export as splunkd runs it: the built add-on's script, XML on stdin, the
splunkd stand-in for the account, its secrets and the KV store, the simulator over
real TLS. Killed with SIGKILL mid-run and restarted; mail looked for on disk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from harness import modinput
from vault.simulator import VaultSimulator

pytestmark = pytest.mark.slow
MESSAGE = "google:workspace:mailbox:message"
EXPORT = "google:workspace:audit:export"
STANZA = "vault_export://mailvault"


def first_day(days: int = 3) -> str:
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today - timedelta(days=days)).strftime("%Y-%m-%d")


@pytest.fixture
def live_sim(ca):
    # the script runs in its own process on the real clock: complete on the first
    # poll; the per-minute quotas are the service tests' subject
    with VaultSimulator(ca, polls_until_done=0) as simulator:
        simulator.enforce_rate_quota = False
        yield simulator


@pytest.fixture
def dirs():
    """TMPDIR and HOME for the script, watched for mail content."""
    made = {name: tempfile.mkdtemp(prefix=f"ve_{name}_", dir="/tmp") for name in ("tmp", "home")}
    yield made
    for path in made.values():
        shutil.rmtree(path, ignore_errors=True)


def configure(splunkd, sim, secret_scan) -> None:
    # the add-on ships ta_mailsec_settings.conf (logging, proxy) with defaults
    splunkd.set_settings("logging", {"loglevel": "INFO"})
    splunkd.add_account(
        "google_account", "google", sim.account_fields(), encrypted=("service_account_json",)
    )
    secret_scan.add(json.loads(sim.sa_json)["private_key"], name="service account key")


def stanzas(**params) -> dict:
    base = {
        "account": "google",
        "users": "alice,bob",
        "index": "mail",
        "interval": "900",
        "first_begin_date": first_day(),
        "max_exports_in_progress": "6",  # every window of a test in one run
    }
    return {STANZA: {**base, **{k: str(v) for k, v in params.items()}}}


def script_args(installed_app, splunkd, splunk_home, dirs) -> dict:
    return {
        "server_uri": splunkd.server_uri,
        "session_key": splunkd.session_key,
        "splunk_home": splunk_home,
        "env": {"TMPDIR": dirs["tmp"], "HOME": dirs["home"]},
    }


def run_script(installed_app, splunkd, splunk_home, dirs, **kwargs):
    params = kwargs.pop("params", {})
    return modinput.run(
        installed_app / "bin" / "vault_export.py",
        stanzas(**params),
        timeout=180,
        **script_args(installed_app, splunkd, splunk_home, dirs),
        **kwargs,
    )


class MailOnDisk:
    """Looks for mail content in every file under the watched folders: message ids
    and body lines of the corpus, or a zip holding an mbox (mail, even compressed)."""

    def __init__(self, sim, roots) -> None:
        self.sim = sim
        self.roots = [Path(r) for r in roots]
        self.found: list = []
        self.scans = 0
        self._lock = threading.Lock()

    def markers(self) -> list:
        specs = [
            spec
            for by_account in self.sim.completed_specs.values()
            for specs in by_account.values()
            for spec in specs
        ]
        out = [spec.message_id.encode() for spec in specs]
        out += [spec.body.encode()[:30] for spec in specs if spec.body.strip()]
        return out

    def scan(self, *_args) -> None:
        with self._lock:
            self.scans += 1
            markers = self.markers()
            for root in self.roots:
                for base, _dirs, files in os.walk(root):
                    for name in files:
                        path = Path(base, name)
                        try:
                            data = path.read_bytes()
                        except OSError:
                            continue
                        if data.startswith(b"PK\x03\x04") and b".mbox" in data:
                            self.found.append((str(path), b"a zip holding an mbox"))
                        for marker in markers:
                            if marker in data:
                                self.found.append((str(path), marker[:40]))


def expected(sim) -> set:
    return sim.expected_message_ids()


def test_full_run_through_the_real_script(
    installed_app, splunkd, splunk_home, live_sim, secret_scan, dirs
):
    configure(splunkd, live_sim, secret_scan)
    disk = MailOnDisk(live_sim, [dirs["tmp"], dirs["home"], splunk_home])
    live_sim.on_media_chunk = lambda name, offset: disk.scan() if offset else None
    result = run_script(installed_app, splunkd, splunk_home, dirs)
    result.assert_clean_exit()
    assert result.stderr == "", result.stderr[-3000:]
    messages = [e.json() for e in result.events if e.sourcetype == MESSAGE]
    assert {m["message_id"] for m in messages} == expected(live_sim)
    assert len(messages) == len({m["event_id"] for m in messages}) == 6 * 9
    assert all(m["api"] == "vault" for m in messages)
    for event in result.events:
        assert event.index == "mail" and event.source == STANZA
    actions = [e.json()["action"] for e in result.events if e.sourcetype == EXPORT]
    assert actions.count("deleted") == 6 and actions.count("extracted") == 6
    assert not live_sim.exports  # deleted once downloaded
    state = splunkd.kv_records("ta_mailsec_vault_export_checkpoints")["mailvault"]
    assert json.loads(state["state"])["requests"] == {}
    assert splunkd.kv_records("ta_mailsec_vault_slots") == {}
    log = splunk_home / "var" / "log" / "splunk" / "ta_mailsec_vault_export_mailvault.log"
    text = log.read_text()
    assert "action=events_ingested" in text and "vault_in_progress" in text
    disk.scan()
    assert disk.scans > 6 and disk.found == []
    secret_scan.watch("vault_export run", result)
    secret_scan.scan_events(result.events)


def test_exports_are_kept_when_delete_after_download_is_false(
    installed_app, splunkd, splunk_home, live_sim, secret_scan, dirs
):
    configure(splunkd, live_sim, secret_scan)
    result = run_script(
        installed_app, splunkd, splunk_home, dirs, params={"delete_after_download": "false"}
    )
    result.assert_clean_exit()
    assert len(live_sim.exports) == 6 and live_sim.calls["delete"] == 0
    messages = {e.json()["message_id"] for e in result.events if e.sourcetype == MESSAGE}
    assert messages == expected(live_sim)


def test_sigkill_during_download_mid_member_and_after_events_then_every_message_once(
    installed_app, splunkd, splunk_home, live_sim, secret_scan, dirs
):
    """Killed (1) while a zip is being transferred, before any of its events, (2) right
    after the first events (before or after their checkpoint), (3) in the middle of
    a member; the last run finishes. Every message is there exactly once by event_id."""
    live_sim.messages_per_export = 450  # three batches of events per member
    live_sim.rate_bytes_per_s = 4 << 20  # a transfer lasts long enough to be cut
    configure(splunkd, live_sim, secret_scan)
    disk = MailOnDisk(live_sim, [dirs["tmp"], dirs["home"], splunk_home])
    seen = []
    args = script_args(installed_app, splunkd, splunk_home, dirs)
    script = installed_app / "bin" / "vault_export.py"

    # 1. during the download: the simulator signals the script mid-transfer
    with modinput.start(script, stanzas(users="alice"), **args) as running:
        fired = threading.Event()

        def kill_mid_transfer(name, offset):
            if offset >= 256 << 10 and not fired.is_set():
                fired.set()
                disk.scan()
                running.send_signal(signal.SIGKILL)

        live_sim.on_media_chunk = kill_mid_transfer
        running.wait(timeout=120)
        result = running.result(raise_corrupt=False)
    live_sim.on_media_chunk = None
    assert fired.is_set() and result.returncode != 0
    assert not [e for e in result.events if e.sourcetype == MESSAGE]
    seen += result.events

    # 2. and 3. killed as events arrive: after the first batch, then mid-member
    for kill_at in (1, 250):

        def kill_when(events, kill_at=kill_at):
            return sum(e.sourcetype == MESSAGE for e in events) >= kill_at

        result = modinput.run(
            script, stanzas(users="alice"), timeout=180, kill_when=kill_when, **args
        )
        assert result.returncode != 0
        seen += result.events
        disk.scan()
    live_sim.rate_bytes_per_s = None
    for _ in range(3):
        result = modinput.run(script, stanzas(users="alice"), timeout=180, **args)
        result.assert_clean_exit()
        seen += result.events
    by_id = {}
    for event in seen:
        if event.sourcetype == MESSAGE:
            data = event.json()
            assert by_id.setdefault(data["event_id"], data["message_id"]) == data["message_id"]
    assert sorted(by_id.values()) == sorted(expected(live_sim))
    assert len(by_id) == 3 * 450
    assert max(live_sim.creates_by_name.values()) == 1  # no window requested twice
    disk.scan()
    assert disk.found == []
    secret_scan.scan_events(seen)
