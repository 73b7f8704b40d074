"""ser_usage's paging against metadata that lies (docs/ser_usage.md, "Behaviour on
errors"): a report ends at its first short or empty page whatever the page count
says, full pages are read on even when the count says stop, and a report still full
at the page cap fails its day without moving the checkpoint."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from mailsec.core.timeutil import iso_z
from mailsec.ser import usage as u
from mailsec.ser import usage_service
from mailsec.ser.auth import SerApiError
from ser_usage.conftest import DAY, T0, UsageHarness
from ser_usage.simulator import RELAY_USAGE, SerUsageSimulator, truth

TODAY = int(T0 // DAY * DAY)
DAY_READ = TODAY - DAY
FAST = {"max_requests_per_minute": 10000}
HIGH = [
    {"pagination": {"totalPages": "1000000"}},
    {"totalCount": 1e12},
    {"pagination": {"totalItemCount": 50, "itemsPerPage": 0.0001}},
]
LOW = [
    {"pagination": {"currentPage": 1, "totalPages": 1, "totalItemCount": 100}},
    {"totalCount": 0},
]


def usage_pages(sim) -> list[int]:
    return [json.loads(e.query["body"])["pageNum"] for e in sim.requests_to(RELAY_USAGE)]


def read_one_day(ca, clock, relay_users: int, lying_metadata):
    with SerUsageSimulator(
        ca, clock=clock, relay_users=relay_users, limit_per_minute=20000,
        lying_metadata=lying_metadata,
    ) as sim:  # fmt: skip
        h = UsageHarness(sim, clock)
        stats = h.cycle(start_date=day_of(DAY_READ), reports="relay_usage", **FAST)
        return sim, h, stats


def day_of(epoch: float) -> str:
    return iso_z(epoch)[:10]


@pytest.mark.parametrize("lying_metadata", HIGH)
def test_a_page_count_too_high_costs_no_request_past_the_short_page(ca, clock, lying_metadata):
    sim, h, stats = read_one_day(ca, clock, 130, lying_metadata)
    want = truth(sim, DAY_READ).usage
    assert 100 < len(want) < 200  # a full page, then a short one
    assert stats["error"] is None
    assert usage_pages(sim) == [1, 2]  # not a million
    assert {r["relay_user_id"] for r in h.of("relay_usage")} == set(want)
    assert h.state["next_day"] == DAY_READ + DAY
    assert stats["cycle"].bad_records == 1  # the disagreement is reported


@pytest.mark.parametrize("lying_metadata", LOW)
def test_a_page_count_too_low_drops_no_row(ca, clock, lying_metadata):
    sim, h, stats = read_one_day(ca, clock, 330, lying_metadata)
    want = truth(sim, DAY_READ).usage
    assert 300 < len(want) < 400
    assert stats["error"] is None
    assert usage_pages(sim) == [1, 2, 3, 4]
    rows = h.of("relay_usage")
    assert sorted(r["relay_user_id"] for r in rows) == sorted(want)
    for r in rows:
        assert {k: r[k] for k in want[r["relay_user_id"]]} == want[r["relay_user_id"]]


def test_true_metadata_is_no_problem(ca, clock):
    sim, _, stats = read_one_day(ca, clock, 330, None)
    assert usage_pages(sim) == [1, 2, 3, 4]
    assert stats["cycle"].bad_records == 0


def test_a_report_still_full_at_the_cap_fails_its_day_and_keeps_the_checkpoint(
    ca, clock, monkeypatch, caplog
):
    monkeypatch.setattr(usage_service, "MAX_PAGES", 2)
    with caplog.at_level(logging.ERROR):
        sim, h, stats = read_one_day(ca, clock, 330, HIGH[0])
    assert usage_pages(sim) == [1, 2]  # the cap, and not one request more
    assert stats["error"] and "still full after 2 pages" in stats["error"]
    assert h.state["next_day"] == DAY_READ  # the day is not done
    assert h.of("relay_usage") == []
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "ser_usage_error" in errors[0]
    assert f"relay_usage of {day_of(DAY_READ)}" in errors[0]
    assert f"checkpoint={day_of(DAY_READ)}" in errors[0]


def test_the_cap_is_a_thousand_pages():
    """A vendor answering full pages forever costs at most 1,000 requests a report."""
    assert usage_service.MAX_PAGES == 1000


class FullThenEmpty:
    """Page 1 full (100 rows), every later page empty, with the metadata given."""

    def __init__(self, metadata: dict) -> None:
        self.metadata = metadata
        self.pages: list[int] = []

    def report_page(self, path, date, page, order_by):
        self.pages.append(page)
        rows = [{"relayUserId": f"u{i}", "name": "x"} for i in range(100)] if page == 1 else []
        return {"data": rows, "metadata": self.metadata}


def poller_with(client) -> usage_service.UsagePoller:
    poller = usage_service.UsagePoller.__new__(usage_service.UsagePoller)
    poller.client = client
    poller.stats = usage_service.CycleStats()
    poller.log = logging.getLogger("test.ser_usage.paging")
    return poller


# an itemsPerPage of 1e-320 makes an infinite page count (it used to raise OverflowError)
@pytest.mark.parametrize(
    "metadata", [*HIGH, *LOW, {}, {"pagination": {"totalItemCount": 50, "itemsPerPage": 1e-320}}]
)
def test_an_empty_page_ends_the_report_whatever_the_metadata(metadata):
    client = FullThenEmpty(metadata)
    rows = u.Rows()
    poller_with(client)._read_pages(
        u.RELAY_USAGE, RELAY_USAGE, "2024-06-09", "name",
        lambda answer, where: u.add_relay_rows(rows, answer, u.RELAY_USAGE, where),
    )  # fmt: skip
    assert client.pages == [1, 2]
    assert len(rows.records) == 100


def test_full_pages_forever_stop_at_the_cap(monkeypatch):
    monkeypatch.setattr(usage_service, "MAX_PAGES", 5)
    client = SimpleNamespace(pages=[])

    def report_page(path, date, page, order_by):
        client.pages.append(page)
        return {"data": [{"relayUserId": f"p{page}-{i}"} for i in range(100)], "metadata": {}}

    client.report_page = report_page
    with pytest.raises(SerApiError, match="relay_failures of 2024-06-09 still full"):
        poller_with(client)._read_pages(
            u.RELAY_FAILURES, "/v1/failures/relay-users", "2024-06-09", "name",
            lambda answer, where: 100,
        )  # fmt: skip
    assert client.pages == [1, 2, 3, 4, 5]
