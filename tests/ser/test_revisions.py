"""Revisits while SER reclassifies tempFailure / inProgress messages for 7 days."""

from __future__ import annotations

from mailsec.core.timeutil import iso_z
from ser.conftest import T0
from ser.simulator import expected_records

HOUR = 3600
DAY = 86400
COUNTS = ("success", "failure", "temp_failure", "in_progress", "total", "dsn_2xx", "dsn_4xx")


def latest(records: list[dict]) -> dict[tuple, dict]:
    """The dashboard's view: the latest revision of each window and user."""
    best: dict[tuple, dict] = {}
    for r in records:
        key = (r["window_start"], r["application_user_name"])
        if key not in best or r["revision"] > best[key]["revision"]:
            best[key] = r
    return best


def test_changed_windows_get_a_new_revision_and_the_last_scheduled_poll_is_final(
    harness, sim, clock
):
    start = T0 - 6 * HOUR
    harness.cycle(start_date=iso_z(start))
    windows = [(start + i * HOUR, start + (i + 1) * HOUR) for i in range(5)]
    first = harness.summaries()
    assert {r["revision"] for r in first} == {1}
    assert not any(r["final"] for r in first)
    assert len(harness.state["revisits"]) == 5

    # Walk a week and a day in steps: each revisit age (1h, 1d, 3d, 7d) is passed.
    for _ in range(8 * 24):
        clock.advance(HOUR)
        harness.cycle(start_date=iso_z(start))

    records = [r for r in harness.summaries() if r["window_start"] < iso_z(windows[-1][1])]
    view = latest(records)
    for ws, we in windows:
        expected = expected_records(sim, ws, we)  # all reclassified by now
        for identity, counts in expected.items():
            record = view[(iso_z(ws), identity[1])]
            assert {k: record[k] for k in COUNTS} == {k: counts[k] for k in COUNTS}
            assert record["temp_failure"] == 0 and record["in_progress"] == 0

    # Revisions grow by one per changed poll; each (window, user, revision) is written once.
    seen = set()
    for r in records:
        key = (r["window_start"], r["application_user_name"], r["revision"])
        assert key not in seen
        seen.add(key)
    per_window: dict[str, set] = {}
    for r in records:
        per_window.setdefault(r["window_start"], set()).add(r["revision"])
    for revisions in per_window.values():
        assert revisions == set(range(1, max(revisions) + 1))
    assert any(max(v) > 1 for v in per_window.values()), "the data had no reclassification"
    # at most 1 first poll + 4 scheduled revisits
    assert all(max(v) <= 5 for v in per_window.values())
    finals = [r for r in records if r["final"]]
    assert finals, "no window changed at its 7-day poll"
    for r in finals:
        assert r["revision"] == max(per_window[r["window_start"]])
    # A window whose last poll changed nothing got no final event: its last revision stands.
    # The state keeps only windows still to be revisited (none of these five).
    assert all(int(k) >= windows[-1][1] for k in harness.state["revisits"])


def test_polls_follow_the_schedule_and_unchanged_windows_are_not_written(harness, sim, clock):
    start = T0 - 2 * HOUR  # one window: 10:00-11:00, polled at 12:00 (age 1h)
    harness.cycle(start_date=iso_z(start), revisit_days=3)
    assert {r["window_start"] for r in harness.summaries()} == {iso_z(start)}
    key = str(int(start))
    for _ in range(4 * 24):
        clock.advance(HOUR)
        # settle_minutes=1000 keeps new windows out: every summary call is a revisit
        harness.cycle(start_date=iso_z(start), revisit_days=3, settle_minutes=1000)
    window_end = start + HOUR
    asked = [
        (q.at - window_end) / HOUR
        for q in sim.log
        if q.path.endswith("summary")
        and q.query.get("startTimeStamp", "").startswith(iso_z(start)[:19])
    ]
    # first poll at 1h of age, then 1d, then 3d (revisit_days=3: the final one)
    assert [round(a) for a in asked] == [1, 24, 72]
    assert key not in harness.state["revisits"]
    # the events written: revision 1, then one per poll that changed a count
    revisions = sorted({r["revision"] for r in harness.summaries()})
    assert revisions == list(range(1, len(revisions) + 1))
    assert len(revisions) <= 3


def test_revisit_days_zero_polls_once_and_marks_final(harness, clock):
    harness.cycle(start_date=iso_z(T0 - 5 * HOUR), revisit_days=0)
    records = harness.summaries()
    assert records and all(r["final"] and r["revision"] == 1 for r in records)
    assert harness.state["revisits"] == {}


def test_old_windows_of_a_backfill_are_final_at_once_and_not_kept(harness):
    harness.cycle(start_date=iso_z(T0 - 10 * DAY))
    records = harness.summaries()
    old = [r for r in records if r["window_end"] <= iso_z(T0 - 7 * DAY)]
    young = [r for r in records if r["window_end"] > iso_z(T0 - 7 * DAY)]
    assert old and all(r["final"] for r in old)
    assert young and not any(r["final"] for r in young)
    # bounded state: only windows younger than revisit_days
    assert all(int(k) >= T0 - 7 * DAY - 3600 for k in harness.state["revisits"])
    assert len(harness.state["revisits"]) <= 7 * 24
