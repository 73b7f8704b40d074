"""`make demo` part: ser_report backfills a day from the SER simulator as splunkd runs it."""

from __future__ import annotations

import time
from collections import Counter

from harness import modinput
from mailsec.core.timeutil import iso_z
from ser.simulator import SerSimulator, SimClock

TITLE = "Proofpoint SER report poller (ser_report)"
HOUR = 3600


def run(env) -> dict:
    # The simulator's data is frozen at the demo's start so its sums can be shown.
    with SerSimulator(env.ca, clock=SimClock(time.time()), answer_format="uu") as sim:
        env.splunkd.add_account(
            "ser_account", "demo_ser", sim.account_fields(), encrypted={"client_secret"}
        )
        start = int(time.time() // HOUR * HOUR - 24 * HOUR)
        stanzas = {
            "ser_report://demo_ser": {
                "account": "demo_ser",
                "index": "main",
                "interval": "300",
                "window": "1h",
                "start_date": iso_z(start),
            }
        }
        kwargs = dict(
            server_uri=env.splunkd.server_uri,
            session_key=env.splunkd.session_key,
            splunk_home=env.splunk_home,
            timeout=120,
        )
        sim.fail_next(503, count=2)  # a 5xx burst, ridden out
        result = modinput.run(env.script("ser_report.py"), stanzas, **kwargs)
        result.assert_clean_exit()
        events = result.events
        summaries = [e for e in events if e.sourcetype == "proofpoint:ser:summary"]
        entitlement = [e.json() for e in events if e.sourcetype == "proofpoint:ser:entitlement"]
        env.show("proofpoint:ser:summary", summaries)
        env.show("proofpoint:ser:entitlement", [e for e in events if e not in summaries])
        records = [e.json() for e in summaries]
        return {
            "windows": len({r["window_start"] for r in records}),
            "summary_events": len(records),
            "messages": sum(r["total"] for r in records),
            "by_application": dict(Counter(r["application_name"] for r in records)),
            "used_percent": entitlement[0]["used_percent"] if entitlement else None,
            "token_requests": sim.token_requests,
            "requests": sim.summary_requests,
            "status_429": sim.rejected_429,
            "status_5xx": sim.count(status=503),
            "answers": "uuencoded TEXT",
        }
