"""Revisits while SER reclassifies tempFailure / inProgress messages for 7 days."""

from __future__ import annotations

from collections import Counter

from mailsec.core.timeutil import iso_z
from ser.conftest import T0
from ser.simulator import SUMMARY_PATH, SerSimulator, expected_records, parse_timestamp

HOUR = 3600
DAY = 86400
COUNTS = ("success", "failure", "temp_failure", "in_progress", "total", "dsn_2xx", "dsn_4xx")
ALL_COUNTS = (
    "success", "failure", "temp_failure", "partial_success", "in_progress", "total",
    "recipients_total", "message_size_total", "delivered_size_total",
    "dsn_2xx", "dsn_3xx", "dsn_4xx", "dsn_5xx",
)  # fmt: skip


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


# -- the request log as the oracle -------------------------------------------------------


def window_polls(sim) -> dict[tuple[float, float], list[float]]:
    """Each window's polls (simulator time of each answered request), in order."""
    polls: dict[tuple[float, float], list[float]] = {}
    for q in sim.log:
        if q.path == SUMMARY_PATH and q.status == 200 and "startTimeStamp" in q.query:
            window = (
                parse_timestamp(q.query["startTimeStamp"]),
                parse_timestamp(q.query["endTimeStamp"]),
            )
            polls.setdefault(window, []).append(q.at)
    return polls


def written_revisions(records: list[dict]) -> dict[str, list[tuple[int, dict, set]]]:
    """Per window start, the revisions in the order written: (revision, records by
    user, the `final` values seen)."""
    found: dict[str, list[tuple[int, dict, set]]] = {}
    for r in records:
        revisions = found.setdefault(r["window_start"], [])
        if not revisions or revisions[-1][0] != r["revision"]:
            revisions.append((r["revision"], {}, set()))
        _, users, finals = revisions[-1]
        assert r["application_user_name"] not in users, f"user twice in one revision: {r}"
        users[r["application_user_name"]] = {k: r[k] for k in ALL_COUNTS}
        finals.add(r["final"])
    return found


def expected_revisions(sim, polls, last_age: int) -> dict[str, list[tuple[int, dict, set]]]:
    """What docs/ser_report.md says must have been written, from the simulator's truth at the
    time of each poll: a revision (the last one + 1) only when a count differs from
    the last revision written, `final` only from the poll at `last_age` (the window's
    last scheduled one)."""
    expected: dict[str, list[tuple[int, dict, set]]] = {}
    for (start, end), times in polls.items():
        revisions: list[tuple[int, dict, set]] = []
        revision, last_written = 0, None
        for i, at in enumerate(times):
            is_last_scheduled = at - end >= last_age
            assert not is_last_scheduled or i == len(times) - 1, "polled after its last poll"
            truth = {
                identity[1]: counts
                for identity, counts in expected_records(sim, start, end, at).items()
            }
            if truth != last_written:
                revision += 1
                last_written = truth
                if truth:  # an empty window has no user to write
                    revisions.append((revision, truth, {is_last_scheduled}))
        if revisions:
            expected[iso_z(start)] = revisions
    return expected


def walk(harness, clock, start: float, days: int, step_hours: int, **params) -> None:
    harness.cycle(start_date=iso_z(start), **params)
    for _ in range(days * 24 // step_hours):
        clock.advance(step_hours * HOUR)
        harness.cycle(start_date=iso_z(start), **params)


def test_each_poll_writes_a_revision_exactly_when_the_truth_at_its_time_changed(
    harness, sim, clock
):
    # 3-hour steps for 8 days: every window passes its 1h, 1d, 3d and 7d polls, and
    # new windows keep arriving at every age of the schedule.
    walk(harness, clock, T0 - 6 * HOUR, days=8, step_hours=3)
    polls = window_polls(sim)
    expected = expected_revisions(sim, polls, last_age=7 * DAY)
    assert written_revisions(harness.summaries()) == expected

    # The data exercised every branch: revisits that changed, revisits that did not,
    # final events, and windows whose last poll changed nothing.
    revisits = sum(len(times) - 1 for times in polls.values())
    changed = sum(len(revisions) - 1 for revisions in expected.values())
    assert changed > 5 and revisits - changed > 20
    finals = [start for start, revisions in expected.items() if revisions[-1][2] == {True}]
    last_polled = [start for (start, end), times in polls.items() if times[-1] - end >= 7 * DAY]
    assert finals and len(finals) < len(last_polled)


def test_revisits_of_windows_that_never_change_write_nothing(ca, clock, harness):
    with SerSimulator(ca, clock=clock, pending_messages=False) as settled:
        harness.sim = settled
        harness.account = settled.account_fields()
        walk(harness, clock, T0 - 6 * HOUR, days=4, step_hours=6, revisit_days=3)
        polls = window_polls(settled)
    records = harness.summaries()
    assert records and {r["revision"] for r in records} == {1}
    # each window written once, by its first poll, though polled again and again
    per_window = Counter(r["window_start"] for r in records)
    for start, end in polls:
        assert per_window[iso_z(start)] == len(expected_records(settled, start, end))
    assert sum(len(times) - 1 for times in polls.values()) > 30  # the revisits were made
    # and some windows reached their last scheduled poll (3 days): it changed nothing,
    # so nothing is final and revision 1 stands
    assert any(times[-1] - end >= 3 * DAY for (_, end), times in polls.items())
    assert not any(r["final"] for r in records)
