"""ser_usage against its simulator (settable clock): days, pages, revisions, overview,
field variation, errors and the rate limit, as docs/ser_usage.md promises."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest

from mailsec.core.timeutil import iso_z
from ser_usage.conftest import DAY, T0, UsageHarness
from ser_usage.simulator import RELAY_FAILURES, RELAY_USAGE, SerUsageSimulator, truth

TODAY = int(T0 // DAY * DAY)  # 2024-06-10T00:00:00Z; T0 is noon
FAST = {"max_requests_per_minute": 10000}


def day_of(epoch: float) -> str:
    return iso_z(epoch)[:10]


def latest(records: list[dict], key) -> dict:
    """The latest revision of each day's report, by (day, row key)."""
    best: dict = {}
    for r in records:
        best.setdefault(r["day"], []).append(r)
    found = {}
    for rows in best.values():
        top = max(r["revision"] for r in rows)
        for r in rows:
            if r["revision"] == top:
                assert found.setdefault(key(r), r) is r, f"two rows for {key(r)}"
    return found


def assert_matches_truth(h: UsageHarness, sim, days, at=None) -> None:
    """The latest revision of every day of every report is the simulator's truth:
    every relay user (and domain and DSN code), its counts, nothing else."""
    wanted = {day_of(day) for day in days}

    def of(report):
        return [r for r in h.of(report) if r["day"] in wanted]

    usage = latest(of("relay_usage"), lambda r: (r["day"], r["relay_user_id"]))
    failures = latest(of("relay_failures"), lambda r: (r["day"], r["relay_user_id"]))
    domains = latest(
        of("delivery_failures"),
        lambda r: (r["day"], r["relay_user_id"], r["domain"], r["dsn_code"]),
    )
    want_usage, want_failures, want_domains = {}, {}, {}
    for day in days:
        t = truth(sim, day, at)
        want_usage.update({(day_of(day), k): v for k, v in t.usage.items()})
        want_failures.update({(day_of(day), k): v for k, v in t.failures.items()})
        want_domains.update({(day_of(day), *k): v for k, v in t.domains.items()})
    assert set(usage) == set(want_usage)
    assert set(failures) == set(want_failures)
    assert set(domains) == set(want_domains)
    for key, want in want_usage.items():
        assert {k: usage[key][k] for k in want} == want, key
    for key, want in want_failures.items():
        assert {k: failures[key][k] for k in want} == want, key
    for key, count in want_domains.items():
        assert domains[key]["count"] == count, key


def test_a_30_day_backfill_of_120_relay_users_reads_every_page_with_no_gap(harness, sim, clock):
    assert sim.relay_users > 100  # two pages a report and day: paging matters
    start = TODAY - 30 * DAY
    stats = harness.cycle(start_date=day_of(start), **FAST)
    assert stats["error"] is None
    # settle_hours=2 at noon: yesterday is the last settled day
    days = [start + i * DAY for i in range(30)]
    assert harness.state["next_day"] == TODAY
    # the first poll of each day: exactly one event per row per report, revision 1
    first = [r for r in harness.sink.events if r.data.get("revision") == 1]
    keys = Counter(
        (e.sourcetype, e.data["day"], e.data["relay_user_id"], e.data.get("domain"),
         e.data.get("dsn_code"))
        for e in first
    )  # fmt: skip
    assert max(keys.values()) == 1
    assert {e.data["day"] for e in first} == {day_of(d) for d in days}  # no gap
    assert {e.time for e in first} == set(map(float, days))  # _time = the day's start
    pages = Counter(json.loads(e.query["body"])["pageNum"] for e in sim.requests_to(RELAY_USAGE))
    assert pages == {1: 30, 2: 30}
    # read at the cycle's end, days older than 3 days are final; the younger ones
    # are revisited; once their last revisit ran, every day is the final truth
    assert {
        r["final"] for r in harness.of("relay_usage") if r["day"] < day_of(TODAY - 3 * DAY)
    } == {True}
    for _ in range(4):
        clock.advance(DAY)
        harness.cycle(start_date=day_of(start), **FAST)
    assert_matches_truth(harness, sim, days)
    assert stats["token_requests"] == 1


def test_revisits_write_a_revision_only_when_a_count_changed_and_final_on_the_last(ca):
    from ser.simulator import SimClock

    clock = SimClock(TODAY + 3 * 3600)  # 03:00: yesterday has just settled
    with SerUsageSimulator(ca, clock=clock, relay_users=30, limit_per_minute=20000) as sim:
        h = UsageHarness(sim, clock)
        day = TODAY - DAY
        sourcetypes = {"relay_usage": "proofpoint:ser:relay_usage",
                       "relay_failures": "proofpoint:ser:relay_failures"}  # fmt: skip
        revision = {report: 0 for report in sourcetypes}
        previous = None
        # the first poll at 3 h of age, then the revisits due at 1 d and 3 d of age,
        # and polls in between that must write nothing
        for advance in (0, 12 * 3600, DAY, 2 * DAY, 3 * DAY, 4 * DAY):
            clock.set(TODAY + 3 * 3600 + advance)
            before = len(h.sink.events)
            h.cycle(start_date=day_of(day), reports="relay_usage,relay_failures", **FAST)
            at = clock.now()
            t = truth(sim, day, at)
            now = {"relay_usage": t.usage, "relay_failures": t.failures}
            due = advance in (0, DAY, 3 * DAY)
            for report, sourcetype in sourcetypes.items():
                written = [
                    e.data
                    for e in h.sink.events[before:]
                    if e.sourcetype == sourcetype and e.data["day"] == day_of(day)
                ]
                changed = due and (previous is None or previous[report] != now[report])
                assert bool(written) == changed, (report, advance)
                if changed:
                    revision[report] += 1
                    assert {r["relay_user_id"] for r in written} == set(now[report])
                    assert {r["revision"] for r in written} == {revision[report]}
                    assert {r["final"] for r in written} == {advance == 3 * DAY}
                    for r in written:
                        want = now[report][r["relay_user_id"]]
                        assert {k: r[k] for k in want} == want
            if due:
                previous = now
        assert str(day) not in h.state["revisits"]  # the last poll was made: no more
        assert revision["relay_usage"] >= 2, "the data set never changed: nothing tested"
        # SER's counts settled within the revisits: the last revision is the final truth
        final = truth(sim, day, clock.now() + 30 * DAY)
        mine = [r for r in h.of("relay_usage") if r["day"] == day_of(day)]
        latest_usage = latest(mine, lambda r: r["relay_user_id"])
        got = {k: {f: r[f] for f in final.usage[k]} for k, r in latest_usage.items()}
        assert got == final.usage


def test_the_overview_comes_once_a_day_and_again_when_last_updated_changes(harness, sim, clock):
    sim.overview_refresh = 6 * 3600  # lastUpdated 12:00 at T0, 18:00 six hours on
    counts = []
    for advance in (0, 60, 3600, 6 * 3600, 6 * 3600 + 60, 12 * 3600 + 1, 12 * 3600 + 600):
        clock.set(T0 + advance)
        harness.cycle(reports="overview")
        counts.append(len(harness.of("overview")))
    # T0: first; +1 min, +1 h: nothing new; 18:00 lastUpdated changed; 18:01 nothing;
    # 00:00 next day (and a new lastUpdated); 00:10 nothing
    assert counts == [1, 1, 1, 2, 2, 3, 3]
    first, second, third = harness.of("overview")
    assert first["last_updated"] == "2024-06-10T12:00:00Z"
    assert second["last_updated"] == "2024-06-10T18:00:00Z"
    assert (first["day"], third["day"]) == ("2024-06-10", "2024-06-11")
    data = sim.overview_data("v2", T0)
    assert first["throughput_limit"] == int(data["throughputLimit"])
    assert first["accepted_throughput"] == int(data["acceptedThroughput"])
    assert first["used_percent"] == round(
        100 * int(data["acceptedThroughput"]) / int(data["throughputLimit"]), 4
    )
    assert first["api_version"] == "v2" and first["deployment_type"] == "SER_STANDARD"


def test_once_a_day_even_when_last_updated_does_not_change(harness, sim, clock):
    sim.overview_refresh = 30 * DAY
    for advance in (0, 3600, DAY, DAY + 3600):
        clock.set(T0 + advance)
        harness.cycle(reports="overview")
    assert [r["day"] for r in harness.of("overview")] == ["2024-06-10", "2024-06-11"]


def test_a_tenant_without_the_v2_overview_is_read_through_v1(harness, sim):
    sim.v2_overview = False
    harness.cycle(reports="overview")
    harness.cycle(reports="overview")
    (overview,) = harness.of("overview")
    assert overview["api_version"] == "v1"
    assert "last_updated" not in overview and "deployment_type" not in overview
    assert overview["accepted_throughput"] == int(sim.overview_data("v1")["acceptedThroughput"])
    # v2 asked once; then the checkpoint remembers v1
    assert len(sim.requests_to("/v2/usage/overview")) == 1
    assert len(sim.requests_to("/v1/usage/overview")) == 2


@pytest.mark.parametrize(
    "variation",
    [
        {"renamed_fields": True},
        {"metadata_form": "pagination"},
        {"metadata_form": "total_count"},
        {"metadata_form": "none"},
        {"throughput_as_strings": False},
    ],
)
def test_field_and_paging_variations_give_the_same_events(ca, clock, variation):
    start = day_of(TODAY - 4 * DAY)
    results = []
    for knobs in ({}, variation):
        with SerUsageSimulator(
            ca, clock=clock, relay_users=130, limit_per_minute=20000, **knobs
        ) as sim:
            h = UsageHarness(sim, clock)
            h.cycle(
                start_date=start, reports="relay_usage,relay_failures,delivery_failures", **FAST
            )
            results.append([e.data for e in h.sink.events])
            assert h.last_run.extras["stats"]["cycle"].bad_records == 0
        clock.set(T0)
    plain, varied = results
    assert varied == plain  # renamed fields read under both names: nothing lost
    assert {r["blocked_messages"] for r in plain if "blocked_messages" in r} != {0}


def test_unknown_fields_are_kept_and_bad_values_counted_not_fatal(harness, sim):
    original = sim.usage_row

    def drifting(user, counts):
        row = original(user, counts)
        row["newCounterFromApi"] = 7
        if user == 3:
            row["sentMessages"] = "n/a"
        return row

    sim.usage_row = drifting
    stats = harness.cycle(start_date=day_of(TODAY - DAY), reports="relay_usage", **FAST)
    assert stats["error"] is None
    rows = harness.of("relay_usage")
    assert {r["new_counter_from_api"] for r in rows} == {7}
    assert [r["sent_messages"] for r in rows if r["relay_user_id"] == "ru-00003"] == [0]
    assert stats["cycle"].bad_records == 1


def test_429_and_5xx_bursts_are_ridden_out_with_the_right_checkpoint(harness, sim):
    sim.fail_next(503, count=3, after=5)
    sim.fail_next(429, count=2, retry_after="2", after=3)
    sim.fail_next(429, count=2)  # without Retry-After: a backoff
    sim.fail_next(502, count=2)
    start = TODAY - 5 * DAY
    stats = harness.cycle(start_date=day_of(start), **FAST)
    assert stats["error"] is None
    assert stats["http"]["status_5xx"] == 5 and stats["http"]["status_429"] == 4
    assert harness.state["next_day"] == TODAY
    firsts = [e for e in harness.sink.events if e.data.get("revision") == 1]
    assert len({e.data["event_id"] for e in firsts}) == len(firsts)  # nothing twice
    assert_first_polls_match(harness, sim, [start + i * DAY for i in range(5)])


def assert_first_polls_match(h, sim, days) -> None:
    """Revision 1 of each day equals the truth (the data set has no pending change
    at those days' first polls when they are old enough; younger ones are checked
    on their rows' presence)."""
    for day in days:
        t = truth(sim, day)
        got = {r["relay_user_id"] for r in h.of("relay_usage") if r["day"] == day_of(day)}
        assert got == set(t.usage), day_of(day)


def test_a_4xx_ends_the_cycle_and_the_next_starts_from_that_day(harness, sim):
    start = TODAY - 6 * DAY
    # days 1-2 are read (2 usage pages, 2 failures pages and the domain calls each)
    calls_per_day = [4 + len({k[0] for k in truth(sim, start + i * DAY).domains}) for i in range(6)]
    before_third = sum(calls_per_day[:2])
    sim.fail_next(400, message="Invalid date: dates.gte", after=before_third + 1)
    first = harness.cycle(start_date=day_of(start), **FAST)
    assert first["error"] and "HTTP 400" in first["error"]
    assert harness.state["next_day"] == start + 2 * DAY
    assert {r["day"] for r in harness.of("relay_usage")} == {day_of(start), day_of(start + DAY)}
    asked = len(sim.log)
    second = harness.cycle(start_date=day_of(start), **FAST)
    assert second["error"] is None
    resumed = next(e for e in sim.log[asked:] if "body" in e.query)
    first_request = json.loads(resumed.query["body"])
    assert first_request["dates"] == {
        "gte": day_of(start + 2 * DAY),
        "lte": day_of(start + 2 * DAY),
    }
    assert first_request["pageNum"] == 1
    assert harness.state["next_day"] == TODAY
    days = {r["day"] for r in harness.of("relay_usage")}
    assert days == {day_of(start + i * DAY) for i in range(6)}
    keys = Counter((r["day"], r["relay_user_id"]) for r in harness.of("relay_usage"))
    assert max(keys.values()) == 1


def test_an_expired_token_is_replaced_once(harness, sim):
    harness.cycle(start_date=day_of(TODAY - 2 * DAY), reports="relay_usage", **FAST)
    sim.expire_tokens()
    stats = harness.cycle(start_date=day_of(TODAY - 2 * DAY), reports="overview")
    assert stats["error"] is None and stats["token_requests"] == 1
    assert sim.token_requests == 2
    assert sim.count("/v2/usage/overview", 401) == 1


def test_no_429_from_a_limit_just_above_the_inputs(harness, sim):
    sim.limit_per_minute = 61
    stats = harness.cycle(
        start_date=day_of(TODAY - 3 * DAY), reports="relay_usage,relay_failures,delivery_failures",
        max_requests_per_minute=60,
    )  # fmt: skip
    assert stats["error"] is None
    assert sim.data_requests > 120  # over two minutes' worth: the rolling limit matters
    assert sim.rejected_429 == 0
    assert sim.max_in_any_window() <= 60


def test_revisits_survive_a_lowered_revisit_days(harness, sim, clock):
    harness.cycle(start_date=day_of(TODAY - 2 * DAY), reports="relay_usage", **FAST)
    assert harness.state["revisits"]
    clock.advance(DAY)
    harness.cycle(reports="relay_usage", revisit_days=0, **FAST)
    assert harness.state["revisits"] == {}


def test_the_checkpoint_starts_30_days_back_by_default(harness, sim):
    harness.cycle(reports="overview")
    assert harness.state["next_day"] == TODAY - 30 * DAY


def test_domain_rows_only_for_relay_users_with_delivery_failures(harness, sim):
    day = TODAY - 5 * DAY
    harness.cycle(start_date=day_of(day), reports="delivery_failures", **FAST)
    asked = defaultdict(int)
    for entry in sim.requests_to("/v1/failures/relay-users/"):
        if json.loads(entry.query["body"])["dates"]["gte"] == day_of(day):
            asked[entry.path.split("/")[4]] += 1
    t = truth(sim, day)
    assert set(asked) == {k[0] for k in t.domains}
    assert not harness.of("relay_failures") and not harness.of("relay_usage")
    assert len(sim.requests_to(RELAY_FAILURES)) >= 2  # read, though not written


def test_a_crash_at_any_write_loses_nothing_and_repeats_carry_the_same_event_id(ca, clock):
    """Killed after each batch in turn (a day's events, then the next), restarted on
    the same checkpoint store: every row of every day arrives, and anything written
    twice is the same event."""
    from ser.conftest import CrashingSink, Killed

    start = day_of(TODAY - 4 * DAY)
    with SerUsageSimulator(ca, clock=clock, relay_users=40, limit_per_minute=20000) as sim:
        whole = UsageHarness(sim, clock)
        whole.cycle(start_date=start, **FAST)
        wanted = {e.data["event_id"]: e.data for e in whole.sink.events if "revision" in e.data}
        for crash_after in range(0, 5):
            h = UsageHarness(sim, clock)
            written = []
            sink = CrashingSink(crash_after)
            with pytest.raises(Killed):
                h.cycle(sink=sink, start_date=start, **FAST)
            written += sink.events
            h.cycle(start_date=start, **FAST)
            written += h.sink.events
            by_id = {}
            for e in written:
                if "revision" in e.data:
                    assert by_id.setdefault(e.data["event_id"], e.data) == e.data
            assert by_id == wanted, crash_after


def test_the_simulator_refuses_a_malformed_date_and_sums_exactly(sim):
    import requests

    from mailsec.core.http import ca_bundle_file

    verify = ca_bundle_file(sim.ca.cert_pem.decode("ascii"))

    def call(method, path, **kwargs):
        return requests.request(method, sim.url + path, verify=verify, timeout=10, **kwargs)

    form = {"grant_type": "client_credentials", "client_id": sim.client_id,
            "client_secret": sim.client_secret}  # fmt: skip
    token = call("POST", "/v1/token", data=form).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    bad = call(
        "POST", RELAY_USAGE, headers=headers,
        json={"dates": {"gte": "2024-6-1", "lte": "2024-06-01"}},
    )  # fmt: skip
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.json()["message"]
    day = day_of(TODAY - 2 * DAY)
    summary = call(
        "GET", "/v1/usage/traffic-summary", headers=headers,
        params={"dates[gte]": day, "dates[lte]": day},
    ).json()  # fmt: skip
    t = truth(sim, TODAY - 2 * DAY)
    assert summary["totalMessages"] == sum(v["requested_messages"] for v in t.usage.values())
    assert summary["deliveryFailureMessages"] == sum(t.domains.values())
    accepted = sum(v["accepted_throughput"] for v in t.usage.values())
    assert int(summary["acceptedThroughput"]) == accepted


def test_the_simulators_own_limit_is_ridden_out_with_and_without_retry_after(harness, sim):
    # the input allowed far more than the simulator: its 429s, every other one without
    # Retry-After (a backoff then), are waited out on the simulator's clock
    sim.limit_per_minute = 20
    sim.retry_after_mode = "alternate"
    start = TODAY - 16 * DAY  # 3 requests a day: over two of the simulator's minutes
    stats = harness.cycle(start_date=day_of(start), reports="relay_usage,relay_failures", **FAST)
    assert stats["error"] is None
    refused = [e for e in sim.log if e.status == 429]
    assert len(refused) >= 2
    assert {e.retry_after is None for e in refused} == {True, False}
    assert harness.state["next_day"] == TODAY
    for day in range(start, TODAY, DAY):
        got = {r["relay_user_id"] for r in harness.of("relay_usage") if r["day"] == day_of(day)}
        assert got == set(truth(sim, day).usage)


def test_nan_and_infinity_in_an_unknown_field_are_written_as_null(harness, sim):
    """json reads NaN and Infinity and would write them back bare: not JSON to Splunk."""
    original = sim.usage_row

    def drifting(user, counts):
        row = original(user, counts)
        row["newRatio"] = float("nan") if user % 2 else 0.5
        row["newLimits"] = {"soft": float("inf"), "list": [1, float("-inf")], "label": "NaN"}
        return row

    sim.usage_row = drifting
    stats = harness.cycle(start_date=day_of(TODAY - DAY), reports="relay_usage", **FAST)
    assert stats["error"] is None
    written = harness.of("relay_usage")
    assert written
    for event in harness.sink.events:
        json.loads(event.json_text(), parse_constant=lambda name: pytest.fail(f"{name} written"))
    assert {r["new_ratio"] for r in written} == {None, 0.5}
    assert {json.dumps(r["new_limits"]) for r in written} == {
        '{"soft": null, "list": [1, null], "label": "NaN"}'
    }
    # each row's bad values are counted, as a count that is not a number is
    odd = sum(1 for r in written if r["new_ratio"] is None)
    assert stats["cycle"].bad_records == odd + len(written)
