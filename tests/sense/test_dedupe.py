"""The messageId ledger: remembered at least 24 hours, across restarts, bounded."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from mailsec.core.checkpoint import MemoryCheckpointStore
from mailsec.sense.dedupe import MessageLedger, message_key


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


START = datetime(2024, 5, 1, 23, 59, 0, tzinfo=timezone.utc)


def test_a_report_is_remembered_for_at_least_24_hours_across_restarts():
    store, clock = MemoryCheckpointStore(), Clock(START)
    key = message_key(("org", "prod", "1539105912220"))
    ledger = MessageLedger(store, "sense1", clock=clock)
    assert not ledger.seen(key)
    assert ledger.record(key)
    for hours in (0, 1, 24, 47):
        clock.now = START + timedelta(hours=hours)
        restarted = MessageLedger(store, "sense1", clock=clock)
        assert restarted.seen(key), hours
        assert ledger.seen(key), hours


def test_old_days_are_forgotten_and_their_records_deleted():
    store, clock = MemoryCheckpointStore(), Clock(START)
    ledger = MessageLedger(store, "sense1", clock=clock)
    ledger.record("a")
    clock.now = START + timedelta(days=1)
    ledger.record("b")
    assert set(store.data) == {"sense1.2024-05-01", "sense1.2024-05-02"}
    clock.now = START + timedelta(days=3)
    assert not ledger.seen("a")  # out of the 3-day window: more than 48 hours old
    assert ledger.seen("b")
    assert set(store.data) == {"sense1.2024-05-02"}
    # a restart after a long pause sweeps what a stopped listener left behind
    clock.now = START + timedelta(days=9)
    MessageLedger(store, "sense1", clock=clock).seen("x")
    assert store.data == {}


def test_inputs_do_not_share_their_ledgers():
    store, clock = MemoryCheckpointStore(), Clock(START)
    MessageLedger(store, "one", clock=clock).record("k")
    assert not MessageLedger(store, "two", clock=clock).seen("k")


def test_a_flood_of_reports_keeps_memory_bounded():
    store, clock = MemoryCheckpointStore(), Clock(START)
    ledger = MessageLedger(store, "sense1", clock=clock, max_per_day=10)
    for n in range(25):
        clock.now = START + timedelta(seconds=n)
        ledger.record(f"m{n}")
    assert len(store.data["sense1.2024-05-01"]) <= 10
    assert ledger.seen("m24")  # the newest are kept


class BrokenStore(MemoryCheckpointStore):
    def get(self, key):
        raise OSError("KV store is initialising (503)")

    def save(self, key, state):
        raise OSError("KV store is initialising (503)")


def test_a_kv_store_outage_degrades_to_memory_and_says_so(caplog):
    ledger = MessageLedger(BrokenStore(), "sense1", clock=Clock(START))
    assert not ledger.seen("k")
    assert ledger.record("k") is False
    assert ledger.seen("k")  # still caught within this process
    assert "dedupe_load_failed" in caplog.text
    assert "dedupe_save_failed" in caplog.text
