"""Backfill N hourly windows against the SER simulator enforcing R requests a minute.

Prints one JSON line: requests made, 429s received, token requests, and the elapsed
time divided by its floor N/R (the time the server's limit allows at best).
Targets: 0 429s, 1 token request, ratio at most 1.10.

    python benchmarks/ser_backfill.py [--windows N] [--rate R]

R is scaled (default 600 a minute for 600 windows) so that the run takes about a
minute: long enough for the rolling limit to matter, short enough to run often.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "package" / "bin"), str(ROOT / "tests")]

from ser.simulator import SUMMARY_PATH, RealClock, SerSimulator  # noqa: E402

from harness.certs import TestCA  # noqa: E402
from mailsec.core.checkpoint import MemoryCheckpointStore  # noqa: E402
from mailsec.core.events import ListSink  # noqa: E402
from mailsec.core.runtime import InputRun  # noqa: E402
from mailsec.core.timeutil import iso_z  # noqa: E402
from mailsec.ser import service  # noqa: E402

HOUR = 3600
SETTLE = 600


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=600, help="hourly windows (N)")
    parser.add_argument("--rate", type=int, default=600, help="server limit a minute (R)")
    args = parser.parse_args()
    n, r = args.windows, args.rate

    sim = SerSimulator(TestCA.create("ser benchmark CA"), clock=RealClock(), limit_per_minute=r)
    with sim:
        now = time.time()
        start = int((now - SETTLE) // HOUR * HOUR - n * HOUR)
        sim.messages(sim.license_start, now)  # generate the data before timing
        sink = ListSink()
        logger = logging.getLogger("ser_backfill")
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
        run = InputRun(
            input_type="ser_report",
            name="bench",
            params={
                "account": "bench",
                "start_date": iso_z(start),
                "window": "1h",
                "max_requests_per_minute": str(r),
            },
            logger=logger,
            sink=sink,
            checkpoints=MemoryCheckpointStore(),
            load_account=lambda tab, name: sim.account_fields(),
            open_store=lambda collection: MemoryCheckpointStore(),
        )
        began = time.monotonic()
        service.run(run)
        elapsed = time.monotonic() - began
        stats = run.extras["stats"]
        summary_requests = sim.count(SUMMARY_PATH)
        floor = n / r * 60.0
        figures = {
            "benchmark": "ser_backfill",
            "windows": n,
            "server_limit_per_minute": r,
            "windows_done": stats["cycle"].windows_done,
            "requests": stats["http"].get("requests", 0),
            "summary_requests": summary_requests,
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
        and figures["windows_done"] == n
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
