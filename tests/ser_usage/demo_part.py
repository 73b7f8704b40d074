"""`make demo` part: ser_usage backfills a week of SER's current reporting API (relay
users, failures, delivery failures, licence overview) as splunkd runs it."""

from __future__ import annotations

import time
from collections import Counter

from ser.simulator import SimClock

from harness import modinput
from mailsec.core.timeutil import iso_z
from ser_usage.simulator import SerUsageSimulator

TITLE = "Proofpoint SER usage and failures (ser_usage)"
DAY = 86400


def run(env) -> dict:
    # The simulator's data is frozen at the demo's start so its sums can be shown.
    clock = SimClock(time.time())
    with SerUsageSimulator(env.ca, clock=clock, relay_users=120, limit_per_minute=2000) as sim:
        env.splunkd.add_account(
            "ser_account", "demo_ser_usage", sim.account_fields(), encrypted={"client_secret"}
        )
        start = int(time.time() // DAY * DAY - 7 * DAY)
        stanzas = {
            "ser_usage://demo_ser_usage": {
                "account": "demo_ser_usage",
                "index": "main",
                "interval": "3600",
                "start_date": iso_z(start)[:10],
                "max_requests_per_minute": "1500",
            }
        }
        kwargs = dict(
            server_uri=env.splunkd.server_uri,
            session_key=env.splunkd.session_key,
            splunk_home=env.splunk_home,
            timeout=180,
        )
        sim.fail_next(503, count=2)  # a 5xx burst, ridden out
        sim.fail_next(429, count=1, retry_after="1")  # and a 429 with Retry-After
        result = modinput.run(env.script("ser_usage.py"), stanzas, **kwargs)
        result.assert_clean_exit()
        by_sourcetype: dict = {}
        for event in result.events:
            by_sourcetype.setdefault(event.sourcetype, []).append(event)
        for sourcetype, events in sorted(by_sourcetype.items()):
            env.show(sourcetype, events)
        usage = [e.json() for e in by_sourcetype.get("proofpoint:ser:relay_usage", [])]
        failures = [e.json() for e in by_sourcetype.get("proofpoint:ser:delivery_failure", [])]
        overview = [e.json() for e in by_sourcetype.get("proofpoint:ser:overview", [])]
        by_class: Counter = Counter()
        for record in failures:
            by_class[record["dsn_class"]] += record["count"]
        return {
            "days": len({r["day"] for r in usage}),
            "relay_users": len({r["relay_user_id"] for r in usage}),
            "events": dict(Counter(e.sourcetype for e in result.events)),
            "messages": sum(r["requested_messages"] for r in usage),
            "delivery_failures_by_class": dict(by_class),
            "licence_used_percent": overview[0]["used_percent"] if overview else None,
            "token_requests": sim.token_requests,
            "requests": sim.data_requests,
            "status_429": sim.count(status=429),
            "status_5xx": sim.count(status=503),
        }
