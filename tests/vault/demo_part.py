"""`make demo`: vault_export run as splunkd runs it against the Vault + Cloud Storage simulator."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from datetime import datetime, timedelta, timezone

from harness import modinput
from vault.simulator import VaultSimulator

TITLE = "Google Vault mail exports (vault_export)"
MESSAGE = "google:workspace:mailbox:message"
EXPORT = "google:workspace:audit:export"


def run(env) -> dict:
    work = tempfile.mkdtemp(prefix="demo_vault_", dir="/tmp")
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    with VaultSimulator(env.ca, polls_until_done=1) as sim:
        sim.enforce_rate_quota = False  # the service tests cover the per-minute quotas
        sim.form = "nested"  # a zip inside the zip, as Vault may send
        sim.wrong_md5["carol"] = 1  # one damaged transfer: an error event, then a retry
        sim.drop_after["bob"] = 20000  # a connection dropped mid-transfer: resumed
        env.splunkd.add_account(
            "google_account",
            "demo_vault",
            sim.account_fields(),
            encrypted=("service_account_json",),
        )
        stanza = {
            "vault_export://demo_vault": {
                "account": "demo_vault",
                "users": "alice,bob,carol",
                "first_begin_date": (today - timedelta(days=2)).strftime("%Y-%m-%d"),
                "max_exports_in_progress": "6",
                "interval": "900",
                "index": "main",
            }
        }
        events = []
        runs = 0
        for _ in range(3):  # request and poll (IN_PROGRESS), then COMPLETED, then the retry
            result = modinput.run(
                env.script("vault_export.py"),
                stanza,
                server_uri=env.splunkd.server_uri,
                session_key=env.splunkd.session_key,
                splunk_home=env.splunk_home,
                env={"TMPDIR": work},
                timeout=120,
            )
            result.assert_clean_exit()
            events += result.events
            runs += 1
        messages = [e for e in events if e.sourcetype == MESSAGE]
        lifecycle = [e for e in events if e.sourcetype == EXPORT]
        env.show("message events", [e.json() for e in messages], limit=2)
        env.show("export lifecycle events", [e.json() for e in lifecycle], limit=4)
        left = [
            name
            for base, _dirs, files in os.walk(work)
            if "ca_bundles" not in base
            for name in files
        ]
        summary = {
            "runs": runs,
            "message_events": len(messages),
            "distinct_event_ids": len({e.json()["event_id"] for e in messages}),
            "corpus_messages": len(sim.expected_message_ids()),
            "lifecycle": dict(Counter(e.json()["action"] for e in lifecycle)),
            "exports_created": sim.calls["create"],
            "exports_left_in_vault": len(sim.exports),
            "files_left_on_disk": len(left),
        }
    shutil.rmtree(work, ignore_errors=True)
    return summary
