"""`make demo` part: the rm_send_mail alert action run as splunkd runs it (payload on
stdin, gzipped results) against the Release Manager simulator over mutual TLS."""

from __future__ import annotations

import base64
from types import SimpleNamespace

from harness.alert import run_alert
from rm.conftest import read_stash
from rm.simulator import RmSimulator, standard_setup

TITLE = "Release Manager alert action (rm_send_mail)"
PASSWORD = "demo-P12-password"

RESULTS = [
    {"user": "alice", "src": ["10.0.0.1", "10.0.0.2"], "count": 41},
    {"user": "bob", "src": "10.0.0.3", "count": 17},
]
BASE = {
    "account": "rm_demo",
    "to": "SOC@Corp.Example, oncall@corp.example",
    "subject": "Splunk alert: failed logins",
    "text": "Failed logins above the threshold.",
    "html": "<p>Failed logins above the <b>threshold</b>.</p>",
    "include_results": "table",
    "max_rows": "10",
    "result_index": "main",
}


def run(env) -> dict:
    registry, client = standard_setup(env.ca)
    with RmSimulator(env.ca, registry=registry) as sim:
        env.splunkd.add_account(
            "rm_account",
            "rm_demo",
            {
                "hostname": sim.hostname,
                "whitelist_name": "SplunkAlerts",
                "client_certificate": base64.b64encode(
                    client.to_pkcs12(PASSWORD.encode())
                ).decode(),
                "certificate_password": PASSWORD,
                "ca_bundle": env.ca.cert_pem.decode(),
            },
            encrypted=("client_certificate", "certificate_password"),
        )
        cases = [
            ("delivered, with the results table", {}, None),
            ("refused locally (no subject): RM not called", {"subject": ""}, None),
            ("RM refuses: whitelist IP mismatch", {}, "ip"),
            ("RM answers an unknown code", {}, "code:NEW_RM_CODE"),
        ]
        events, statuses = [], []
        for label, change, trouble in cases:
            if trouble == "ip":
                sim.registry.whitelist[0].ip = "192.0.2.10"
            elif trouble:
                sim.fail_next(trouble)
            result = run_alert(
                env.script("rm_send_mail.py"),
                configuration={**BASE, **change},
                results=RESULTS,
                server_uri=env.splunkd.server_uri,
                session_key=env.splunkd.session_key,
                search_name=f"Demo: {label}",
                splunk_home=env.splunk_home,
                timeout=60,
            )
            sim.registry.whitelist[0].ip = "127.0.0.1"
            _, outcome = read_stash(env.splunk_home)
            events.extend(outcome)
            statuses.append(result.returncode)
        env.show(
            "rm:mail:send outcome events (spool files)",
            [SimpleNamespace(sourcetype="rm:mail:send", data=e) for e in events],
            limit=4,
        )
        return {
            "runs": len(cases),
            "exit_statuses": statuses,
            "codes": [e["code"] for e in events],
            "delivered_mails": len(sim.mailbox),
            "requests_reaching_rm": len(sim.requests),
            "latency_ms_of_delivery": events[0].get("latency_ms") if events else None,
        }
