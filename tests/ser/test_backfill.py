"""Backfill, at-least-once and the stop signal, against the simulator over TLS."""

from __future__ import annotations

import pytest

from mailsec.core.timeutil import iso_z, parse_iso8601
from ser.conftest import INPUT, T0, CrashingSink, Killed
from ser.simulator import expected_records

HOUR = 3600
START = T0 - 3 * 86400  # 2024-06-07T12:00:00Z


def by_window(records: list[dict]) -> dict[tuple, dict[tuple, dict]]:
    found: dict[tuple, dict[tuple, dict]] = {}
    for record in records:
        window = (record["window_start"], record["window_end"])
        identity = (
            record["application_name"],
            record["application_user_name"],
            record["from_envelope"],
            record["from_header"],
        )
        assert identity not in found.setdefault(window, {}), f"two events for {identity}"
        found[window][identity] = record
    return found


COUNT_FIELDS = (
    "success", "failure", "temp_failure", "partial_success", "in_progress", "total",
    "recipients_total", "message_size_total", "delivered_size_total",
    "dsn_2xx", "dsn_3xx", "dsn_4xx", "dsn_5xx",
)  # fmt: skip


def test_three_day_backfill_is_exact_gap_free_and_one_event_per_user_per_window(harness, sim):
    stats = harness.cycle(start_date=iso_z(START))
    assert stats["error"] is None
    # settle_minutes=10: at 12:00 the 11:00-12:00 window is not polled yet
    windows = [(START + i * HOUR, START + (i + 1) * HOUR) for i in range(71)]
    found = by_window(harness.summaries())
    assert harness.state["next_start"] == windows[-1][1]
    assert set(found) <= {(iso_z(s), iso_z(e)) for s, e in windows}
    for start, end in windows:
        expected = expected_records(sim, start, end)
        got = found.get((iso_z(start), iso_z(end)), {})
        assert set(got) == set(expected)
        for identity, record in got.items():
            assert {k: record[k] for k in COUNT_FIELDS} == expected[identity]
            assert record["revision"] == 1
            assert record["account"] == "acme"
            assert parse_iso8601(record["time"]).timestamp() == start
    assert sum(len(v) for v in found.values()) > 71  # several users in most windows
    # one summary request per window, one licence-to-date request, one token
    assert sim.summary_requests == 71 + 1
    assert sim.token_requests == 1
    assert next(q.query for q in sim.log if q.path.endswith("summary")) == {
        "startTimeStamp": "2024-06-07T12:00:00.000Z",
        "endTimeStamp": "2024-06-07T13:00:00.000Z",
    }


def test_next_cycle_continues_where_the_last_ended(harness, clock):
    harness.cycle(start_date=iso_z(START))
    first = len(harness.summaries())
    clock.advance(3 * HOUR)
    harness.cycle(start_date=iso_z(START))
    new = [r for r in harness.summaries()[first:] if r["revision"] == 1]
    assert {r["window_start"] for r in new} == {iso_z(T0 - HOUR), iso_z(T0), iso_z(T0 + HOUR)}
    assert harness.state["next_start"] == T0 + 2 * HOUR


def test_default_start_is_seven_days_before_the_first_run_and_kept(harness, clock):
    with pytest.raises(Killed):
        harness.cycle(sink=CrashingSink(0), window="1d")  # killed at the first write
    assert harness.state["next_start"] == T0 - 7 * 86400 - 12 * HOUR  # aligned to the day
    clock.advance(2 * 86400)
    harness.cycle(window="1d")
    starts = sorted({r["window_start"] for r in harness.summaries()})
    assert starts[0] == iso_z(T0 - 7 * 86400 - 12 * HOUR)


@pytest.mark.parametrize("crash_after", [0, 1, 17, 40, 70])
def test_killed_at_any_point_loses_nothing_and_repeats_keep_their_event_id(
    harness, sim, crash_after
):
    crashing = CrashingSink(crash_after)
    with pytest.raises(Killed):
        harness.cycle(sink=crashing, start_date=iso_z(START))
    harness.cycle(start_date=iso_z(START))
    written = harness.summaries(crashing.events) + harness.summaries()
    ids: dict[str, dict] = {}
    for record in written:
        same = ids.setdefault(record["event_id"], record)
        assert same == record  # a repeat is the same event, same id
    # Every (window, user) of the truth with its counts and one event_id, nothing else:
    # a count alone could hide a loss plus a duplicate.
    truth = {
        (iso_z(START + i * HOUR), identity[1]): counts
        for i in range(71)
        for identity, counts in expected_records(
            sim, START + i * HOUR, START + (i + 1) * HOUR
        ).items()
    }
    ids_by_key: dict[tuple, set] = {}
    for record in written:
        key = (record["window_start"], record["application_user_name"])
        ids_by_key.setdefault(key, set()).add(record["event_id"])
        assert {k: record[k] for k in COUNT_FIELDS} == truth.get(key), key
    assert set(ids_by_key) == set(truth)
    assert all(len(found) == 1 for found in ids_by_key.values())
    assert len(written) == len(truth)  # the crash hit before the write: nothing repeated


def test_a_crash_after_the_write_and_before_the_checkpoint_repeats_the_same_ids(harness):
    store = harness.checkpoints
    original = store.save
    saves = {"n": 0}

    def save(key, state):
        saves["n"] += 1
        if saves["n"] == 12:
            raise Killed("killed between write and checkpoint")
        original(key, state)

    store.save = save
    with pytest.raises(Killed):
        harness.cycle(start_date=iso_z(START))
    before = list(harness.summaries())
    store.save = original
    harness.sink.events.clear()
    harness.cycle(start_date=iso_z(START))
    after = harness.summaries()
    repeated = {r["event_id"] for r in before} & {r["event_id"] for r in after}
    assert repeated  # the window in flight was written again ...
    old = {r["event_id"]: r for r in before}
    for record in after:
        if record["event_id"] in repeated:
            assert record == old[record["event_id"]]  # ... as the very same events
    windows = {r["window_start"] for r in before} | {r["window_start"] for r in after}
    assert len(windows) == 71


def test_stop_ends_the_backfill_at_a_safe_point_and_resumes(harness, clock):
    run = harness.make_run({"start_date": iso_z(START)})
    stop_after = {"n": 0}
    original = harness.sink.write

    def write(events):
        written = original(events)
        stop_after["n"] += 1
        if stop_after["n"] == 5:
            run.stop.set()
        return written

    harness.sink.write = write
    from mailsec.ser import service

    service.run(run)
    assert run.extras["stats"]["cycle"].stopped
    stopped_at = harness.state["next_start"]
    assert START < stopped_at < T0 - HOUR
    written_windows = {r["window_start"] for r in harness.summaries()}
    assert max(written_windows) < iso_z(stopped_at)
    harness.sink.write = original
    harness.cycle(start_date=iso_z(START))
    assert len({r["window_start"] for r in harness.summaries()}) == 71
    assert harness.checkpoints.get(INPUT)["next_start"] == T0 - HOUR
