"""The `ser_usage` input: one polling cycle per run (docs/ser_usage.md).

A cycle walks UTC days from the checkpoint up to the last settled day (a day ended
`settle_hours` ago), reading every page of every chosen report before the day
counts as done; then polls again the recent days whose revisit is due (SER's counts
still change for a few days), writing a report's rows again, with the revision
incremented, only when one of its counts changed; then writes the overview event
when the UTC day or the overview's `lastUpdated` changed.

At-least-once: a day's events are written and flushed before the checkpoint that
covers them is saved, so a crash re-emits at most the day in flight, with the same
`event_id`s. An error ends the cycle with the checkpoint where it was: the next
cycle starts from the same day. The checkpoint holds:

    {"version": 1,
     "next_day": <epoch of the first UTC day not yet read>,
     "revisits": {"<day start>": {"polled_at": <epoch>,
                                 "reports": {"<report>": [revision, digest]}}},
     "overview": {"day": "YYYY-MM-DD", "marker": "<lastUpdated or digest>",
                  "api": "v2" | "v1"}}
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from mailsec.core.runtime import InputRun
from mailsec.core.timeutil import align_down, iso_z
from mailsec.ser import usage as u
from mailsec.ser import windows as w
from mailsec.ser.auth import SerApiError
from mailsec.ser.config import SerUsageInputConfig
from mailsec.ser.cycle import STATE_VERSION, CyclePoller, run_cycle
from mailsec.ser.usage_client import (
    PAGE_SIZE,
    RELAY_FAILURES_PATH,
    RELAY_USAGE_PATH,
    UsageClient,
    delivery_domain_path,
)

DEFAULT_LOOKBACK_DAYS = 30
# Pages of one report and day (100,000 rows): a report still full past it is an
# error of that day, which stays unread (docs/ser_usage.md, "Behaviour on errors").
MAX_PAGES = 1000
DAY_REPORTS = (u.RELAY_USAGE, u.RELAY_FAILURES, u.DELIVERY_FAILURES)
# the figures of the `ser_usage_cycle` log line, in its order
CYCLE_FIELDS = (
    "days_done",
    "days_left",
    "revisits",
    "revised_reports",
    "events",
    "pages",
    "bad_records",
)


@dataclass
class CycleStats:
    days_done: int = 0
    days_left: int = 0
    revisits: int = 0
    revised_reports: int = 0
    events: int = 0
    pages: int = 0
    bad_records: int = 0
    stopped: bool = False


class UsagePoller(CyclePoller):
    def __init__(
        self,
        run: InputRun,
        config: SerUsageInputConfig,
        client: UsageClient,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(run, config, client, clock=clock)
        self.day_reports = tuple(r for r in DAY_REPORTS if r in config.reports)
        self.stats = CycleStats()
        self.state = self._load_state()

    # -- state -------------------------------------------------------------------------

    def _load_state(self) -> dict:
        state = self._saved_state()
        if state is not None:
            return state
        first = self._first_start(DEFAULT_LOOKBACK_DAYS * w.DAY)
        state = {"version": STATE_VERSION, "next_day": align_down(first, w.DAY), "revisits": {}}
        # saved at once: a default start must not move when the first run is cut short
        self._save(state)
        self.log.info("ser_usage_checkpoint action=created next_day=%s", _day(state["next_day"]))
        return state

    def checkpoint(self) -> str:
        return _day(self.state["next_day"])

    # -- one cycle ---------------------------------------------------------------------

    def cycle(self) -> CycleStats:
        if self.day_reports:
            self._walk_new_days()
            if not self._stopping():
                self._revisit_due_days()
        if u.OVERVIEW in self.config.reports and not self._stopping():
            self._overview()
        return self.stats

    def _settled_until(self) -> float:
        return self.clock() - self.settle

    def _days_left(self, next_day: int) -> int:
        return max(0, int((self._settled_until() - next_day) // w.DAY))

    def _walk_new_days(self) -> None:
        self.stats.days_left = self._days_left(self.state["next_day"])
        if self.stats.days_left:
            self._walk(self._next_day)

    def _next_day(self) -> bool:
        """Read and write the next settled day; False when none is settled."""
        stats = self.stats
        day = self.state["next_day"]
        if day + w.DAY > self._settled_until():
            return False
        reports = self._read_day(day)
        next_age = w.next_revisit_age(self.schedule, self.clock() - (day + w.DAY))
        final = next_age is None
        events = []
        for name, rows in reports.items():
            events += u.day_events(
                name, self.config.account, day, 1, final, rows, index=self.run.index
            )
        if events:
            stats.events += self.run.sink.write(events)
        self.state["next_day"] = day + w.DAY
        if not final:
            self.state["revisits"][str(day)] = {
                "polled_at": self.clock(),
                "reports": {name: [1, rows.digest()] for name, rows in reports.items()},
            }
        self._save()
        stats.days_done += 1
        stats.days_left = self._days_left(self.state["next_day"])
        return True

    def _progress(self, phase: str) -> None:
        # key=value for the health dashboard's ser_usage panel
        self.log.info(
            "ser_usage_backfill phase=%s days_done=%d days_left=%d next_day=%s reports=%s",
            phase, self.stats.days_done, self.stats.days_left, _day(self.state["next_day"]),
            ",".join(self.day_reports),
        )  # fmt: skip

    def _revisit_due_days(self) -> None:
        revisits: dict[str, Any] = self.state["revisits"]
        for key in sorted(revisits, key=int):
            if self._stopping():
                return
            day = int(key)
            entry = revisits[key]
            day_end = day + w.DAY
            due_age = w.next_revisit_age(self.schedule, entry["polled_at"] - day_end)
            if due_age is None:  # revisit_days was lowered: nothing more to poll
                del revisits[key]
                self._save()
                continue
            if self.clock() < day_end + due_age:
                continue
            reports = self._read_day(day)
            self.stats.revisits += 1
            final = w.next_revisit_age(self.schedule, self.clock() - day_end) is None
            known = entry["reports"]
            events = []
            for name, rows in reports.items():
                revision, old_digest = known.get(name, [0, u.Rows().digest()])
                new_digest = rows.digest()
                if new_digest != old_digest:
                    revision += 1
                    self.stats.revised_reports += 1
                    events += u.day_events(
                        name, self.config.account, day, revision, final, rows, index=self.run.index
                    )
                known[name] = [revision, new_digest]
            if events:
                self.stats.events += self.run.sink.write(events)
            if final:
                del revisits[key]
            else:
                entry["polled_at"] = self.clock()
            self._save()

    # -- reading a day -----------------------------------------------------------------

    def _read_day(self, day: int) -> dict[str, u.Rows]:
        """Every page of every chosen report for one day; raises on any error."""
        date = _day(day)
        reports: dict[str, u.Rows] = {}
        if u.RELAY_USAGE in self.day_reports:
            reports[u.RELAY_USAGE] = self._read_relay_report(u.RELAY_USAGE, RELAY_USAGE_PATH, date)
        if u.RELAY_FAILURES in self.day_reports or u.DELIVERY_FAILURES in self.day_reports:
            failures = self._read_relay_report(u.RELAY_FAILURES, RELAY_FAILURES_PATH, date)
            if u.RELAY_FAILURES in self.day_reports:
                reports[u.RELAY_FAILURES] = failures
            if u.DELIVERY_FAILURES in self.day_reports:
                domains = u.Rows()
                for relay_user in failures.with_delivery_failures:
                    path = delivery_domain_path(relay_user["relay_user_id"])
                    self._read_pages(
                        u.DELIVERY_FAILURES,
                        path,
                        date,
                        "dsnCode",
                        lambda answer, where, user=relay_user: u.add_domain_rows(
                            domains, answer, user, where
                        ),
                    )
                self._count_problems(u.DELIVERY_FAILURES, date, domains.problems)
                reports[u.DELIVERY_FAILURES] = domains
        return reports

    def _read_relay_report(self, report: str, path: str, date: str) -> u.Rows:
        rows = u.Rows()
        self._read_pages(
            report, path, date, "name",
            lambda answer, where: u.add_relay_rows(rows, answer, report, where),
        )  # fmt: skip
        self._count_problems(report, date, rows.problems)
        return rows

    def _read_pages(self, report: str, path: str, date: str, order_by: str, add: Callable) -> None:
        """Pages until one comes back short or empty. The page count the metadata
        announces only raises a warning when it disagrees: believed, a count too high
        made a request for every empty page it named, one too low dropped rows."""
        announced = None
        for page in range(1, MAX_PAGES + 1):
            answer = self.client.report_page(path, date, page, order_by)
            self.stats.pages += 1
            held = add(answer, f"{path} {date} page {page}")
            if page == 1:
                announced = u.total_pages(answer, PAGE_SIZE)
            if held < PAGE_SIZE:
                read = page if held else page - 1
                if announced is not None and announced != read:
                    problem = (
                        f"{path} {date}: metadata announces {announced} pages, {read} held rows"
                    )
                    self._count_problems(report, date, [problem])
                return
        raise SerApiError(
            f"{path} {date}",
            None,
            f"{report} of {date} still full after {MAX_PAGES} pages; the day is not done",
        )

    def _count_problems(self, report: str, date: str, problems: list) -> None:
        if problems:
            self.stats.bad_records += len(problems)
            self.log.warning(
                "ser_usage_bad_data report=%s day=%s problems=%d first=%r",
                report, date, len(problems), problems[0],
            )  # fmt: skip

    # -- overview ----------------------------------------------------------------------

    def _overview(self) -> None:
        known = self.state.get("overview") or {}
        version = known.get("api", "v2")
        try:
            answer = self.client.overview(version)
        except SerApiError as error:
            if error.status != 404 or version != "v2":
                raise
            # a tenant without v2: v1 has the same figures but the last four
            version = "v1"
            answer = self.client.overview(version)
        now = self.clock()
        event, marker, problems = u.overview_event(
            self.config.account, version, answer, now, index=self.run.index
        )
        if problems:
            self.stats.bad_records += len(problems)
            self.log.warning("ser_usage_bad_data report=overview first=%r", problems[0])
        today = _day(now)
        if known.get("day") == today and known.get("marker") == marker:
            return
        self.stats.events += self.run.sink.write([event])
        self.state["overview"] = {"day": today, "marker": marker, "api": version}
        self._save()
        data = event.data
        self.log.info(
            "ser_usage_overview api=%s used_percent=%s forecast_percent=%s last_updated=%s",
            version, data["used_percent"], data["forecast_percent"],
            data.get("last_updated", "-"),
        )  # fmt: skip


def _day(epoch: float) -> str:
    return iso_z(epoch)[:10]


def run(run: InputRun) -> None:
    config = SerUsageInputConfig.from_params(run.params)
    run_cycle(run, config, UsageClient, UsagePoller, "ser_usage", CYCLE_FIELDS)
