"""ser_usage as splunkd runs it: the installed add-on's script, XML on stdin, the
splunkd stand-in for the account, secrets and KV-store checkpoint, the reporting API
simulator over TLS trusted through the account's ca_bundle."""

from __future__ import annotations

import json
import random
import signal
import time

import pytest
from ser.simulator import SimClock

from harness import modinput
from harness.alert import read_conf
from mailsec.core.timeutil import iso_z
from ser_usage.simulator import SerUsageSimulator, truth

DAY = 86400
pytestmark = pytest.mark.slow
SOURCETYPES = ("proofpoint:ser:relay_usage", "proofpoint:ser:relay_failures",
               "proofpoint:ser:delivery_failure")  # fmt: skip


@pytest.fixture
def live_sim(ca):
    # Frozen at the test's start: every day the input reads (it settles on the real
    # clock) has the same figures for the whole test, so they can be checked.
    clock = SimClock(time.time())
    with SerUsageSimulator(ca, clock=clock, relay_users=110, limit_per_minute=20000) as sim:
        yield sim


@pytest.fixture
def setup(installed_app, splunkd, splunk_home, live_sim, secret_scan):
    # splunkd serves the add-on's default/*.conf: here, the settings tabs' defaults
    for stanza, fields in read_conf(installed_app / "default" / "ta_mailsec_settings.conf").items():
        splunkd.set_conf("ta_mailsec_settings", stanza, fields)
    splunkd.add_account(
        "ser_account", "acme", live_sim.account_fields(), encrypted={"client_secret"}
    )
    secret_scan.add(live_sim.client_secret, name="ser client_secret")
    now = live_sim.clock.now()
    today = int(now // DAY * DAY)
    # settle_hours puts the last settled day at the day before yesterday whatever the
    # hour the test starts at (and for the rest of that day)
    settle_hours = int((now - today) // 3600) + 24
    return {
        "script": installed_app / "bin" / "ser_usage.py",
        "kwargs": dict(
            server_uri=splunkd.server_uri,
            session_key=splunkd.session_key,
            splunk_home=splunk_home,
        ),
        "last_day": today - 2 * DAY,
        "settle_hours": settle_hours,
        "log": splunk_home / "var/log/splunk/ta_mailsec_ser_usage_main.log",
    }


def backfill(setup, days: int, **params) -> tuple[dict, list[int]]:
    first = setup["last_day"] - (days - 1) * DAY
    stanza = {
        "account": "acme",
        "index": "mail",
        "interval": "3600",
        "start_date": iso_z(first)[:10],
        "settle_hours": str(setup["settle_hours"]),
        "max_requests_per_minute": "10000",
        **params,
    }
    return {"ser_usage://main": stanza}, [first + i * DAY for i in range(days)]


def run(setup, stanzas, **kwargs) -> modinput.RunResult:
    return modinput.run(setup["script"], stanzas, timeout=180, **setup["kwargs"], **kwargs)


def rows(events) -> list[dict]:
    return [e.json() for e in events if e.sourcetype in SOURCETYPES]


def key(record: dict, sourcetype: str) -> tuple:
    return (sourcetype, record["day"], record["relay_user_id"], record.get("domain"),
            record.get("dsn_code"))  # fmt: skip


def the_truth(sim, days) -> dict:
    expected = {}
    for day in days:
        t = truth(sim, day)
        d = iso_z(day)[:10]
        for uid, counts in t.usage.items():
            expected[("proofpoint:ser:relay_usage", d, uid, None, None)] = counts
        for uid, counts in t.failures.items():
            expected[("proofpoint:ser:relay_failures", d, uid, None, None)] = counts
        for (uid, domain, dsn), count in t.domains.items():
            expected[("proofpoint:ser:delivery_failure", d, uid, domain, dsn)] = {"count": count}
    return expected


def assert_exactly_the_truth(events, sim, days) -> None:
    """One event per relay user (domain, DSN code) per day per report, with the
    simulator's sums, one distinct event_id each, nothing else."""
    expected = the_truth(sim, days)
    ids: dict[tuple, set] = {}
    for e in events:
        if e.sourcetype not in SOURCETYPES:
            continue
        record = e.json()
        k = key(record, e.sourcetype)
        assert k in expected, f"an event the truth does not hold: {k}"
        assert {f: record[f] for f in expected[k]} == expected[k], k
        ids.setdefault(k, set()).add(record["event_id"])
    assert set(ids) == set(expected)
    assert {k: v for k, v in ids.items() if len(v) != 1} == {}


def kv_state(splunkd) -> dict:
    return json.loads(splunkd.kv_records("ta_mailsec_ser_usage_checkpoints")["main"]["state"])


def test_a_30_day_backfill_through_the_runner_is_exact_and_clean(
    setup, live_sim, splunkd, secret_scan
):
    stanzas, days = backfill(setup, 30)
    result = run(setup, stanzas)
    secret_scan.watch("ser_usage run", result)  # events, stderr; the logs are watched too
    result.assert_clean_exit()
    assert result.stderr == ""
    assert_exactly_the_truth(result.events, live_sim, days)
    assert len(rows(result.events)) == len(the_truth(live_sim, days))  # no repeat either
    (overview,) = [e.json() for e in result.events if e.sourcetype == "proofpoint:ser:overview"]
    assert overview["used_percent"] > 0 and overview["last_updated"]
    assert {e.index for e in result.events} == {"mail"}
    assert all(e.source == "ser_usage://main" for e in result.events)
    assert {e.time for e in result.events if e.sourcetype in SOURCETYPES} == set(map(float, days))
    assert kv_state(splunkd)["next_day"] == days[-1] + DAY
    assert live_sim.token_requests == 1
    assert live_sim.rejected_429 == 0
    pages = {json.loads(e.query["body"])["pageNum"] for e in live_sim.requests_to("/v1/usage/")
             if "body" in e.query}  # fmt: skip
    assert pages == {1, 2}  # 110 relay users: two pages a day
    log = setup["log"].read_text()
    assert "ser_usage_backfill phase=done days_done=30 days_left=0" in log
    assert "ser_usage_cycle result=ok" in log and "action=run_succeeded" in log


def run_and_kill(setup, stanzas, after_events: int, delay: float) -> modinput.RunResult:
    """SIGKILL the input `delay` seconds after its `after_events`-th event: at a random
    phase of its work (a request, a rate-limit wait, a write, a checkpoint save)."""
    with modinput.start(setup["script"], stanzas, **setup["kwargs"]) as running:
        running.wait_for(after_events, timeout=90)
        time.sleep(delay)
        running.kill()
        return running.result()


def test_killed_at_random_points_and_restarted_loses_nothing(setup, live_sim):
    stanzas, days = backfill(setup, 12, max_requests_per_minute="3000")
    total = len(the_truth(live_sim, days))
    seed = random.randrange(2**32)
    print(f"kill seed={seed}")  # rerun a failure with this seed
    rng = random.Random(seed)
    first = run_and_kill(setup, stanzas, rng.randint(1, total // 3), rng.uniform(0, 0.5))
    second = run_and_kill(setup, stanzas, rng.randint(1, total // 4), rng.uniform(0, 0.5))
    third = run(setup, stanzas)
    third.assert_clean_exit()
    for killed in (first, second):
        assert killed.killed, f"seed={seed}"
        assert killed.returncode == -signal.SIGKILL, f"seed={seed}: exited on its own"
    events = first.events + second.events + third.events
    by_id: dict[str, dict] = {}
    for record in rows(events):
        assert by_id.setdefault(record["event_id"], record) == record, f"seed={seed}"
    assert_exactly_the_truth(events, live_sim, days)


def test_a_4xx_ends_the_run_and_the_next_run_starts_from_that_day(setup, live_sim, splunkd):
    stanzas, days = backfill(setup, 4, reports="relay_usage")
    live_sim.fail_next(403, message="This API key is not entitled to SER reports", after=4)
    first = run(setup, stanzas)  # days 1 and 2 (two pages each), then 403
    first.assert_clean_exit()
    assert first.stderr == ""
    assert_exactly_the_truth_of(first.events, live_sim, days[:2])
    assert kv_state(splunkd)["next_day"] == days[2]
    log = setup["log"].read_text()
    assert "ser_usage_error status=403" in log and f"checkpoint={iso_z(days[2])[:10]}" in log
    assert "ser_usage_cycle result=error days_done=2 " in log
    second = run(setup, stanzas)
    second.assert_clean_exit()
    assert_exactly_the_truth_of(first.events + second.events, live_sim, days)


def assert_exactly_the_truth_of(events, sim, days) -> None:
    usage = [e for e in events if e.sourcetype == "proofpoint:ser:relay_usage"]
    expected = {(iso_z(d)[:10], uid): c for d in days for uid, c in truth(sim, d).usage.items()}
    got = {}
    for e in usage:
        r = e.json()
        assert (r["day"], r["relay_user_id"]) not in got, "written twice"
        got[(r["day"], r["relay_user_id"])] = {k: r[k] for k in next(iter(expected.values()))}
    assert got == expected


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"reports": "relay_usage|traffic"}, "reports"),
        ({"settle_hours": "49"}, "settle_hours"),
        ({"revisit_days": "8"}, "revisit_days"),
        ({"max_requests_per_minute": "0"}, "max_requests_per_minute"),
        ({"start_date": "yesterday"}, "start_date"),
    ],
)
def test_validation_refuses_bad_values_naming_the_field(setup, params, field):
    stanza = {**backfill(setup, 2)[0]["ser_usage://main"], **params}
    result = modinput.validate(setup["script"], "ser_usage://bad", stanza, **setup["kwargs"])
    assert not result.ok
    assert field in result.message


def test_validation_accepts_the_forms_values(setup):
    stanza = {**backfill(setup, 2)[0]["ser_usage://main"], "reports": "overview|relay_usage"}
    result = modinput.validate(setup["script"], "ser_usage://good", stanza, **setup["kwargs"])
    assert result.ok, result.message
