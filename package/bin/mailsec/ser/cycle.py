"""One cycle of a SER input, the part `ser_report` and `ser_usage` share
(docs/ser_report.md, docs/ser_usage.md): `CyclePoller`, the base of both pollers
(versioned checkpoint with `revisits`, settle delay, revisit schedule, stop flag),
and `run_cycle`: the account's rate limit, the HTTP client, the error lines and the
cycle line.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

import requests

from mailsec.core.http import HttpClient
from mailsec.core.runtime import InputRun
from mailsec.core.timeutil import as_utc
from mailsec.ser import windows as w
from mailsec.ser.auth import SerApiError
from mailsec.ser.config import SerAccount
from mailsec.ser.limits import SER_RETRY, client_rate_limiter

STATE_VERSION = 1
PROGRESS_EVERY_SECONDS = 30.0


class CyclePoller:
    """Built as `poller_class(run, config, client, clock=clock)`; a subclass sets
    `stats` (a dataclass with `stopped`) and `state`, and has `cycle()` and
    `checkpoint()` (where the next cycle starts, as the error lines show it)."""

    stats: Any
    state: dict

    def __init__(
        self, run: InputRun, config: Any, client: Any, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.run = run
        self.config = config
        self.client = client
        self.log = run.logger
        self.clock = clock
        self.settle = config.settle.total_seconds()
        self.schedule = w.revisit_schedule(config.revisit_days)

    def _saved_state(self) -> Optional[dict]:
        """The checkpoint, or None when there is none of this version."""
        state = self.run.checkpoints.get(self.run.name)
        if isinstance(state, dict) and state.get("version") == STATE_VERSION:
            state.setdefault("revisits", {})
            return state
        return None

    def _first_start(self, lookback_seconds: float) -> float:
        start = self.config.start_date
        return as_utc(start).timestamp() if start else self.clock() - lookback_seconds

    def _save(self, state: Optional[dict] = None) -> None:
        self.run.checkpoints.save(self.run.name, state if state is not None else self.state)

    def _stopping(self) -> bool:
        if self.run.stop.is_set():
            self.stats.stopped = True
        return self.stats.stopped

    def _walk(self, step: Callable[[], bool]) -> None:
        """Call `step` until it returns False (nothing settled is left) or the input
        stops, logging `_progress` started, running (every PROGRESS_EVERY_SECONDS)
        and done or stopped."""
        self._progress("started")
        last_report = self.clock()
        while not self._stopping() and step():
            if self.clock() - last_report >= PROGRESS_EVERY_SECONDS:
                self._progress("running")
                last_report = self.clock()
        self._progress("stopped" if self.stats.stopped else "done")

    def _progress(self, phase: str) -> None:
        raise NotImplementedError


def run_cycle(
    run: InputRun,
    config: Any,
    client_class: Callable[..., Any],
    poller_class: Callable[..., Any],
    prefix: str,
    cycle_fields: Sequence[str],
) -> None:
    """Run one cycle and log `<prefix>_error` (on failure) and `<prefix>_cycle` with
    `cycle_fields` of the stats, then the HTTP figures."""
    account = SerAccount.from_fields(run.load_account("ser_account", config.account))
    # Tests drive time through extras; in production the clocks are real and a
    # wait ends early when the input is told to stop.
    clock: Callable[[], float] = run.extras.get("clock", time.time)
    sleep: Callable[[float], Any] = run.extras.get("sleep", run.stop.wait)
    # the account's limit, shared with its other inputs on this host (both SER inputs)
    bucket = client_rate_limiter(
        config.max_requests_per_minute,
        clock=run.extras.get("clock", time.monotonic),
        sleep=sleep,
        shared_state_dir=run.shared_state_dir,
        account=config.account,
    )
    with HttpClient(
        ca_bundle_pem=account.ca_bundle,
        proxy=run.proxy,
        retry=SER_RETRY,
        rate_limiter=bucket,
        logger=run.logger,
        sleep=sleep,
        wall_clock=clock,
    ) as http:
        client = client_class(
            account, http, clock=clock, token_cache=run.secret_cache, logger=run.logger
        )
        poller = poller_class(run, config, client, clock=clock)
        error: Optional[str] = None
        try:
            poller.cycle()
        except SerApiError as failure:
            error = str(failure)
            run.logger.error(
                f"{prefix}_error status=%s request=%r message=%r checkpoint=%s",
                failure.status if failure.status is not None else "malformed",
                failure.what, failure.vendor_message, poller.checkpoint(),
            )  # fmt: skip
        except requests.RequestException as failure:
            error = type(failure).__name__
            run.logger.error(
                f"{prefix}_error status=unreachable error=%s message=%r checkpoint=%s",
                type(failure).__name__, str(failure)[:300], poller.checkpoint(),
            )  # fmt: skip
        stats = poller.stats
        counts = " ".join(f"{name}=%d" for name in cycle_fields)
        run.logger.info(
            f"{prefix}_cycle result=%s {counts} requests=%d status_429=%d status_5xx=%d "
            "token_requests=%d rate_limit_wait_s=%.1f",
            "error" if error else ("stopped" if stats.stopped else "ok"),
            *(getattr(stats, name) for name in cycle_fields),
            http.stats["requests"], http.stats["status_429"], http.stats["status_5xx"],
            client.token_requests, bucket.waited_seconds,
        )  # fmt: skip
        run.extras["stats"] = {
            "cycle": stats,
            "http": dict(http.stats),
            "token_requests": client.token_requests,
            "error": error,
        }
