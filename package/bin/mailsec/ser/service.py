"""The `ser_report` input: one polling cycle per run.

A cycle walks the aligned windows from the checkpoint up to now - settle_minutes
(one summary call each), then polls again the windows whose revisit is due, then
writes the entitlement event when the day or the entitlement changed.

At-least-once: the checkpoint is saved only after `sink.write` returned for the
events it covers, so a crash re-emits at most the window in flight, with the same
`event_id`s. The checkpoint holds:

    {"version": 1,
     "next_start": <epoch of the first window not yet polled>,
     "revisits": {"<window start>": [window end, revision, digest, polled at]},
     "entitlement": {"day": "YYYY-MM-DD", "digest": "..."}}

`revisits` holds only windows with a poll still scheduled (younger than
revisit_days), so it stays bounded whatever the backlog.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from mailsec.core.runtime import InputRun
from mailsec.core.timeutil import as_utc, iso_z
from mailsec.ser import windows as w
from mailsec.ser.client import SerClient
from mailsec.ser.config import SerInputConfig
from mailsec.ser.cycle import STATE_VERSION, CyclePoller, run_cycle
from mailsec.ser.report import (
    digest,
    entitlement_event,
    parse_summary,
    summary_events,
    window_digest,
)

DEFAULT_LOOKBACK = 7 * w.DAY
# the figures of the `ser_cycle` log line, in its order
CYCLE_FIELDS = (
    "windows_done",
    "windows_left",
    "revisits",
    "revised_windows",
    "events",
    "bad_records",
)


@dataclass
class CycleStats:
    windows_done: int = 0
    windows_left: int = 0
    revisits: int = 0
    events: int = 0
    revised_windows: int = 0
    bad_records: int = 0
    stopped: bool = False


class SerPoller(CyclePoller):
    def __init__(
        self,
        run: InputRun,
        config: SerInputConfig,
        client: SerClient,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(run, config, client, clock=clock)
        self.size = int(config.window.total_seconds())
        self.stats = CycleStats()
        self.seen_entitlement: Optional[dict] = None
        self.state = self._load_state()

    # -- state -------------------------------------------------------------------------

    def _load_state(self) -> dict:
        state = self._saved_state()
        if state is not None:
            return state
        first = self._first_start(DEFAULT_LOOKBACK)
        state = {
            "version": STATE_VERSION,
            "next_start": w.align_down(first, self.size),
            "revisits": {},
        }
        # Saved at once: a default start (7 days before the first run) must not move
        # when the first run is interrupted.
        self._save(state)
        self.log.info("ser_checkpoint action=created next_start=%s", iso_z(state["next_start"]))
        return state

    def checkpoint(self) -> str:
        return iso_z(self.state["next_start"])

    # -- one cycle ---------------------------------------------------------------------

    def cycle(self) -> CycleStats:
        self._walk_new_windows()
        if not self._stopping():
            self._revisit_due_windows()
        if not self._stopping():
            self._entitlement()
        return self.stats

    def _poll(self, start: int, end: int) -> tuple[list[dict], float]:
        answer = self.client.summary(as_utc(start), as_utc(end))
        summary = parse_summary(answer)
        if summary.entitlement is not None:
            self.seen_entitlement = summary.entitlement
        if summary.problems:
            self.stats.bad_records += len(summary.problems)
            self.log.warning(
                "ser_bad_data window_start=%s window_end=%s problems=%d first=%r",
                iso_z(start), iso_z(end), len(summary.problems), summary.problems[0],
            )  # fmt: skip
        return summary.users, self.clock() - end

    def _write(self, start: int, end: int, revision: int, final: bool, users: list) -> None:
        if not users:
            return
        events = summary_events(
            self.config.account, start, end, revision, final, users, index=self.run.index
        )
        self.stats.events += self.run.sink.write(events)

    def _walk_new_windows(self) -> None:
        self.stats.windows_left = w.count_windows(
            self.state["next_start"], self.clock() - self.settle, self.size
        )
        if self.stats.windows_left:
            self._walk(self._next_window)

    def _next_window(self) -> bool:
        """Poll and write the next settled window; False when none is settled."""
        start, end = w.window_after(self.state["next_start"], self.size)
        if end > self.clock() - self.settle:
            return False
        users, age = self._poll(start, end)
        next_age = w.next_revisit_age(self.schedule, age)
        self._write(start, end, 1, next_age is None, users)
        self.state["next_start"] = end
        if next_age is not None:
            self.state["revisits"][str(start)] = [end, 1, window_digest(users), self.clock()]
        self._save()
        self.stats.windows_done += 1
        self.stats.windows_left = w.count_windows(end, self.clock() - self.settle, self.size)
        return True

    def _progress(self, phase: str) -> None:
        # key=value for the health dashboard's backfill panel
        self.log.info(
            "ser_backfill phase=%s windows_done=%d windows_left=%d next_start=%s window=%ds",
            phase, self.stats.windows_done, self.stats.windows_left,
            iso_z(self.state["next_start"]), self.size,
        )  # fmt: skip

    def _revisit_due_windows(self) -> None:
        revisits: dict[str, Any] = self.state["revisits"]
        for key in sorted(revisits, key=int):
            if self._stopping():
                return
            end, revision, old_digest, polled_at = revisits[key]
            due_age = w.next_revisit_age(self.schedule, polled_at - end)
            if due_age is None:  # revisit_days was lowered: nothing more to poll
                del revisits[key]
                self._save()
                continue
            if self.clock() < end + due_age:
                continue
            start = int(key)
            users, age = self._poll(start, end)
            self.stats.revisits += 1
            final = w.next_revisit_age(self.schedule, age) is None
            new_digest = window_digest(users)
            if new_digest != old_digest:
                revision += 1
                self.stats.revised_windows += 1
                self._write(start, end, revision, final, users)
            if final:
                del revisits[key]
            else:
                revisits[key] = [end, revision, new_digest, self.clock()]
            self._save()

    def _entitlement(self) -> None:
        now = self.clock()
        today = as_utc(now).strftime("%Y-%m-%d")
        known = self.state.get("entitlement") or {}
        seen = self.seen_entitlement
        if known.get("day") == today and (seen is None or digest(seen) == known.get("digest")):
            return
        # Without a start, SER sums from license_start: the bytes used so far, exactly,
        # up to the first window not yet polled.
        used_until = self.state["next_start"]
        summary = parse_summary(self.client.summary(None, as_utc(used_until)))
        entitlement = summary.entitlement or seen
        if entitlement is None:
            self.log.warning("ser_entitlement status=missing reason=no entitlement block")
            return
        event = entitlement_event(
            self.config.account,
            entitlement,
            summary.message_size_total,
            used_until,
            now,
            index=self.run.index,
        )
        self.stats.events += self.run.sink.write([event])
        self.state["entitlement"] = {"day": today, "digest": digest(entitlement)}
        self._save()
        self.log.info(
            "ser_entitlement used_bytes=%d used_percent=%s annual_throughput=%s license_end=%s",
            event.data["used_bytes"], event.data["used_percent"],
            event.data["annual_throughput"], event.data["license_end"],
        )  # fmt: skip


def run(run: InputRun) -> None:
    config = SerInputConfig.from_params(run.params)
    run_cycle(run, config, SerClient, SerPoller, "ser", CYCLE_FIELDS)
