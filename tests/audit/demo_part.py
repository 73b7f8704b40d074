"""`make demo`: audit_export run as splunkd runs it against the Email Audit API simulator."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter

from audit.simulator import AuditSimulator, gpg_keypair
from harness import modinput

TITLE = "Google Workspace mailbox exports (audit_export)"
PASSPHRASE = "demo passphrase 7f3a"
MESSAGE = "google:workspace:mailbox:message"
EXPORT = "google:workspace:audit:export"


def run(env) -> dict:
    with tempfile.TemporaryDirectory(prefix="demo_keys_") as home:
        public, private = gpg_keypair(home, "Demo Audit <audit@example.com>", PASSPHRASE)
    work = tempfile.mkdtemp(prefix="demo_audit_", dir="/tmp")  # short: gpg-agent's socket path
    with AuditSimulator(env.ca, polls_until_done=2, marked_delete_times=1) as sim:
        sim.file_faults["carol"] = {1: "corrupt"}  # one bad file: an error event, no crash
        env.splunkd.add_account(
            "google_account",
            "demo_google",
            sim.account_fields(public, private, PASSPHRASE),
            encrypted=("service_account_json", "pgp_private_key", "pgp_passphrase"),
        )
        stanza = {
            "audit_export://demo_mailboxes": {
                "account": "demo_google",
                "users": "alice,bob,carol",
                "interval": "900",
                "index": "main",
            }
        }
        events = []
        runs = 0
        for _ in range(3):  # request, poll (PENDING), poll (COMPLETED: download, index, delete)
            result = modinput.run(
                env.script("audit_export.py"),
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
        expected = sum(len(specs) for specs in sim.expected_specs().values())
        carol = next(e for e in sim.exports.values() if e.user == "carol")
        in_bad_file = len(carol.specs[1 :: sim.files_per_export])
        # the input's own files (downloads, plaintext, a GnuPG home); the HTTP client's
        # content-addressed CA bundles are public certificates every run reuses
        left = [
            name
            for base, _dirs, files in os.walk(work)
            if "ta_mailsec_ca_bundles" not in base
            for name in files
        ]
    shutil.rmtree(work, ignore_errors=True)
    return {
        "runs": runs,
        "message_events": len(messages),
        "distinct_event_ids": len({e.json()["event_id"] for e in messages}),
        "corpus_messages": expected,
        "messages_in_the_corrupt_file": in_bad_file,
        "lifecycle": dict(Counter(e.json()["action"] for e in lifecycle)),
        "exports_created": sim.calls["create"],
        "files_left_on_disk": len(left),
    }
