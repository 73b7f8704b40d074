"""Backfill D days of three reports for U relay users against the SER reporting API
simulator enforcing R requests a minute (docs/ser_usage.md).

Prints one JSON line: the requests the backfill needs (N, counted from the
simulator's truth: every page of relay usage and relay failures, one delivery
failures call per relay user with delivery failures, the overview), the requests
made, 429s received, token requests, and the elapsed time side by side with its floor
N/R (the time the server's limit allows at best). Targets: ratio at most 1.10,
0 429s, 1 token request.

    python benchmarks/ser_usage_backfill.py [--days D] [--users U] [--rate R]

R is scaled (default 3,000 a minute) so that the run takes about 80 s: long
enough for the rolling limit to matter, short enough to run often.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "package" / "bin"), str(ROOT / "tests")]

from ser.simulator import RealClock  # noqa: E402
from ser_usage.simulator import SerUsageSimulator, truth  # noqa: E402

from harness.certs import TestCA  # noqa: E402
from mailsec.core.checkpoint import MemoryCheckpointStore  # noqa: E402
from mailsec.core.events import ListSink  # noqa: E402
from mailsec.core.runtime import InputRun  # noqa: E402
from mailsec.core.timeutil import iso_z  # noqa: E402
from mailsec.ser import usage_service  # noqa: E402

DAY = 86400
PAGE = 100


def needed_requests(sim: SerUsageSimulator, days: list) -> int:
    """The fewest data requests that read every page of the three reports of these
    days, plus the overview."""
    needed = 1
    for day in days:
        t = truth(sim, day)
        needed += max(1, math.ceil(len(t.usage) / PAGE)) + max(1, math.ceil(len(t.failures) / PAGE))
        per_user: dict = {}
        for uid, _domain, _dsn in t.domains:
            per_user[uid] = per_user.get(uid, 0) + 1
        needed += sum(max(1, math.ceil(rows / PAGE)) for rows in per_user.values())
    return needed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=90, help="UTC days (D)")
    parser.add_argument("--users", type=int, default=250, help="relay users (U)")
    parser.add_argument("--rate", type=int, default=3000, help="server limit a minute (R)")
    args = parser.parse_args()
    d, users, r = args.days, args.users, args.rate

    sim = SerUsageSimulator(
        TestCA.create("ser_usage benchmark CA"),
        clock=RealClock(),
        limit_per_minute=r,
        relay_users=users,
        messages_per_user_day=4,
    )
    with sim:
        today = int(time.time() // DAY * DAY)
        first = today - d * DAY
        days = [first + i * DAY for i in range(d)]
        n = needed_requests(sim, days)  # generates the data before timing, too
        sink = ListSink()
        logger = logging.getLogger("ser_usage_backfill")
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
        run = InputRun(
            input_type="ser_usage",
            name="bench",
            params={
                "account": "bench",
                "start_date": iso_z(first)[:10],
                "settle_hours": "0",
                "max_requests_per_minute": str(r),
            },
            logger=logger,
            sink=sink,
            checkpoints=MemoryCheckpointStore(),
            load_account=lambda tab, name: sim.account_fields(),
            open_store=lambda collection: MemoryCheckpointStore(),
        )
        began = time.monotonic()
        usage_service.run(run)
        elapsed = time.monotonic() - began
        stats = run.extras["stats"]
        floor = n / r * 60.0
        figures = {
            "benchmark": "ser_usage_backfill",
            "days": d,
            "relay_users": users,
            "reports": 3,
            "server_limit_per_minute": r,
            "days_done": stats["cycle"].days_done,
            "requests_needed": n,
            "data_requests": sim.data_requests,
            "status_429": sim.rejected_429,
            "token_requests": sim.token_requests,
            "max_requests_in_any_minute": sim.max_in_any_window(),
            "events": len(sink.events),
            "elapsed_s": round(elapsed, 2),
            "floor_s": round(floor, 2),
            "ratio": round(elapsed / floor, 3),
            "error": stats["error"],
        }
    print(json.dumps(figures))
    ok = (
        figures["status_429"] == 0
        and figures["token_requests"] == 1
        and figures["ratio"] <= 1.10
        and figures["days_done"] == d
        and figures["data_requests"] == n
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
