"""ser_report as splunkd runs it: the installed add-on's script, XML on stdin, the
splunkd stand-in for the account, secrets and KV-store checkpoint, the simulator over
TLS trusted through the account's ca_bundle."""

from __future__ import annotations

import json
import random
import signal
import time

import pytest

from harness import modinput
from mailsec.core.timeutil import iso_z
from ser.simulator import SUMMARY_PATH, RealClock, SerSimulator, SimClock, expected_records

HOUR = 3600
pytestmark = pytest.mark.slow


@pytest.fixture
def live_sim(ca):
    # Frozen at the test's start: the input (real time) polls only windows that ended
    # before it, so every answer is stable and can be checked against the truth.
    clock = SimClock(time.time())
    with SerSimulator(ca, clock=clock) as simulator:
        yield simulator


@pytest.fixture
def setup(installed_app, splunkd, splunk_home, live_sim, secret_scan):
    splunkd.add_account(
        "ser_account", "acme", live_sim.account_fields(), encrypted={"client_secret"}
    )
    secret_scan.add(live_sim.client_secret, name="ser client_secret")
    now = live_sim.clock.now()
    hour = int(now // HOUR * HOUR)
    # The script reads the real clock while the simulator stays at `now`. With
    # settle_minutes = (minutes past the hour of `now`) + 30, the script's cutoff is
    # (hour - 30 min) + (the seconds since `now`): the last window it polls ends at
    # hour - 1h whenever the test starts and for the next 29 minutes of its run, so the
    # windows expected cannot drift when a test crosses a boundary of the hour.
    settle_minutes = int((now - hour) // 60) + 30
    return {
        "script": installed_app / "bin" / "ser_report.py",
        "kwargs": dict(
            server_uri=splunkd.server_uri,
            session_key=splunkd.session_key,
            splunk_home=splunk_home,
        ),
        "last_end": hour - HOUR,
        "settle_minutes": settle_minutes,
        "log": splunk_home / "var/log/splunk/ta_mailsec_ser_report_main.log",
    }


def backfill(setup, hours: int, **params) -> tuple[dict, list[tuple[int, int]]]:
    """The stanzas of an input `main` backfilling `hours` hourly windows, and those
    windows."""
    start = setup["last_end"] - hours * HOUR
    stanza = {
        "account": "acme",
        "index": "mail",
        "interval": "300",
        "window": "1h",
        "start_date": iso_z(start),
        "settle_minutes": str(setup["settle_minutes"]),
        **params,
    }
    windows = [(start + i * HOUR, start + (i + 1) * HOUR) for i in range(hours)]
    return {"ser_report://main": stanza}, windows


def run(setup, stanzas, **kwargs) -> modinput.RunResult:
    return modinput.run(setup["script"], stanzas, timeout=120, **setup["kwargs"], **kwargs)


def truth(sim, windows) -> dict[tuple[str, str], dict]:
    """The simulator's records of these windows, by (window_start, user)."""
    return {
        (iso_z(ws), identity[1]): counts
        for ws, we in windows
        for identity, counts in expected_records(sim, ws, we).items()
    }


def assert_exactly_the_truth(records: list[dict], sim, windows) -> None:
    """Every (window, user) of the truth, with its counts, one distinct event_id
    each, nothing else: a count alone could hide a loss plus a duplicate."""
    expected = truth(sim, windows)
    ids: dict[tuple[str, str], set] = {}
    for r in records:
        key = (r["window_start"], r["application_user_name"])
        ids.setdefault(key, set()).add(r["event_id"])
        assert key in expected, f"an event for no window of the truth: {key}"
        assert {k: r[k] for k in expected[key]} == expected[key], key
    assert set(ids) == set(expected)
    assert {key: len(found) for key, found in ids.items() if len(found) != 1} == {}


def kv_checkpoint(splunkd) -> dict:
    return splunkd.kv_records("ta_mailsec_ser_report_checkpoints")["main"]


def summaries(events) -> list[dict]:
    return [e.json() for e in events if e.sourcetype == "proofpoint:ser:summary"]


def test_three_day_backfill_through_the_runner_is_exact(
    setup, live_sim, splunkd, splunk_home, secret_scan
):
    stanzas, windows = backfill(setup, 72)
    result = run(setup, stanzas)
    secret_scan.watch("ser_report run", result)  # events, stderr; the logs are watched too
    result.assert_clean_exit()
    records = summaries(result.events)
    assert_exactly_the_truth(records, live_sim, windows)
    assert len(records) == len(truth(live_sim, windows))  # no repeat either
    assert {e.index for e in result.events} == {"mail"}
    assert all(e.source == "ser_report://main" for e in result.events)
    (entitlement,) = [e.json() for e in result.events if e.sourcetype.endswith("entitlement")]
    assert entitlement["used_bytes"] > 0
    state = json.loads(kv_checkpoint(splunkd)["state"])
    assert state["next_start"] == windows[-1][1]
    assert live_sim.token_requests == 1
    log = setup["log"].read_text()
    assert "ser_backfill phase=done" in log and "windows_left=0" in log
    assert "action=run_succeeded" in log


def run_and_kill(setup, stanzas, after_events: int, delay: float) -> modinput.RunResult:
    """SIGKILL the input `delay` seconds after its `after_events`-th event: at a random
    phase of its work (a request, a rate-limit wait, a write, a checkpoint save),
    where a kill on the arrival of an event would always land just after a write."""
    with modinput.start(setup["script"], stanzas, **setup["kwargs"]) as running:
        running.wait_for(after_events, timeout=60)
        time.sleep(delay)
        running.kill()
        return running.result()


def test_killed_at_a_random_point_and_restarted_loses_nothing(setup, live_sim):
    stanzas, windows = backfill(setup, 60)
    total = len(truth(live_sim, windows))
    seed = random.randrange(2**32)
    print(f"kill seed={seed}")  # rerun a failure with this seed
    rng = random.Random(seed)
    # Killed twice, then left to finish. Each kill leaves at least 5/12 of the windows
    # to do: at the client's 15 requests a second, over 0.7 s of work, so a kill at
    # most 0.2 s after an event always lands before the end.
    first = run_and_kill(setup, stanzas, rng.randint(1, total // 3), rng.uniform(0, 0.2))
    second = run_and_kill(setup, stanzas, rng.randint(1, total // 4), rng.uniform(0, 0.2))
    third = run(setup, stanzas)
    third.assert_clean_exit()
    for killed in (first, second):
        assert killed.killed, f"seed={seed}"
        assert killed.returncode == -signal.SIGKILL, f"seed={seed}: exited on its own"
        assert killed.truncated, f"seed={seed}: the stream was closed, not cut"
    records = summaries(first.events) + summaries(second.events) + summaries(third.events)
    by_id: dict[str, dict] = {}
    for record in records:
        assert by_id.setdefault(record["event_id"], record) == record, f"seed={seed}"
    assert_exactly_the_truth(records, live_sim, windows)


def test_uuencoded_answers_give_the_same_events_as_json_answers(setup, live_sim, splunkd):
    stanzas, windows = backfill(setup, 6)
    as_json = run(setup, stanzas)
    as_json.assert_clean_exit()
    forget_checkpoint(splunkd)
    live_sim.answer_format = "uu"
    as_uu = run(setup, stanzas)
    as_uu.assert_clean_exit()
    # 6 windows and one licence-to-date call a run, all answered 200
    assert live_sim.count(SUMMARY_PATH, 200) == live_sim.summary_requests == 2 * (6 + 1)
    assert summaries(as_uu.events) == summaries(as_json.events)  # event_id included
    assert_exactly_the_truth(summaries(as_uu.events), live_sim, windows)
    used = [
        e.json()["used_bytes"]
        for r in (as_json, as_uu)
        for e in r.events
        if e.sourcetype.endswith("entitlement")
    ]
    assert len(used) == 2 and used[0] == used[1] > 0


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "Invalid timestamp 2024-06-10T12:00:00Z: use yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"),
        (403, "This API key is not entitled to SER reports"),
    ],
)
def test_400_and_403_end_the_cycle_with_the_reason_and_an_unmoved_checkpoint(
    setup, live_sim, splunkd, status, message
):
    stanzas, windows = backfill(setup, 6)
    failing = windows[3]
    live_sim.fail_next(status, message=message, after=3)  # the 4th window's request
    first = run(setup, stanzas)
    first.assert_clean_exit()
    # the three windows before were written and checkpointed; the 4th was not
    assert_exactly_the_truth(summaries(first.events), live_sim, windows[:3])
    assert not [e for e in first.events if e.sourcetype.endswith("entitlement")]
    checkpoint = kv_checkpoint(splunkd)
    state = json.loads(checkpoint["state"])
    assert state["next_start"] == failing[0]
    assert sorted(map(int, state["revisits"])) == [ws for ws, _ in windows[:3]]
    reason = (
        f"ser_error status={status} request='summary {iso_z(failing[0])[:19]}.000Z to "
        f"{iso_z(failing[1])[:19]}.000Z' message={message!r} checkpoint={iso_z(failing[0])}"
    )
    log = setup["log"].read_text()
    assert reason in log
    assert "ser_cycle result=error windows_done=3 " in log

    # The next run meets the same answer at once: the checkpoint does not move at all.
    live_sim.fail_next(status, message=message)
    asked = live_sim.summary_requests
    second = run(setup, stanzas)
    second.assert_clean_exit()
    assert second.events == []
    assert kv_checkpoint(splunkd) == checkpoint
    assert live_sim.summary_requests == asked + 1
    assert live_sim.log[-1].query["startTimeStamp"].startswith(iso_z(failing[0])[:19])
    assert setup["log"].read_text().count(reason) == 2

    # Once the API answers again, nothing was lost.
    third = run(setup, stanzas)
    third.assert_clean_exit()
    records = summaries(first.events) + summaries(third.events)
    assert_exactly_the_truth(records, live_sim, windows)
    assert len(records) == len(truth(live_sim, windows))


def test_runs_of_429_with_and_without_retry_after_are_ridden_out(setup, live_sim, splunkd):
    # 2 requests a second instead of 1000 a minute, on the real clock the waits run
    # on; "alternate": every other 429 comes without Retry-After (a backoff then).
    live_sim.limit_per_minute = 2
    live_sim.limit_window = 1.0
    live_sim.limit_clock = RealClock()
    live_sim.retry_after_mode = "alternate"
    stanzas, windows = backfill(setup, 4)
    result = run(setup, stanzas)
    result.assert_clean_exit()
    rejected = live_sim.rejected_429
    # 5 requests at 2 a second: 2 waits at least, the first 429 with Retry-After, the
    # second without
    assert rejected >= 2, "the limit was never hit: nothing was ridden out"
    # each 429 was waited out: Retry-After's seconds, or a backoff when it was absent
    asked = [q for q in live_sim.log if q.path == SUMMARY_PATH]
    waits = [(q.retry_after, after.real - q.real) for q, after in zip(asked, asked[1:])]
    waits = [(header, waited) for (header, waited), q in zip(waits, asked) if q.status == 429]
    assert {header is None for header, _ in waits} == {True, False}
    for header, waited in waits:
        assert waited >= (float(header) if header else 0.5) - 0.05, (header, waited)
    # every window written, exactly once, and the checkpoint past the last: 0 lost
    records = summaries(result.events)
    assert_exactly_the_truth(records, live_sim, windows)
    assert len(records) == len(truth(live_sim, windows))
    assert json.loads(kv_checkpoint(splunkd)["state"])["next_start"] == windows[-1][1]
    log = setup["log"].read_text()
    assert f"ser_cycle result=ok windows_done={len(windows)} " in log
    assert f" status_429={rejected} " in log
    assert "ser_error" not in log


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start_date": "last tuesday"}, "start_date"),
        ({"start_date": "2024-02-30"}, "start_date"),
        ({"window": "2h"}, "window"),
        ({"max_requests_per_minute": "1001"}, "max_requests_per_minute"),
    ],
)
def test_validation_refuses_bad_values_naming_the_field(setup, params, field):
    stanza = {**backfill(setup, 6)[0]["ser_report://main"], **params}
    result = modinput.validate(setup["script"], "ser_report://bad", stanza, **setup["kwargs"])
    assert not result.ok
    assert field in result.message


def test_validation_accepts_good_values(setup):
    stanza = {**backfill(setup, 6)[0]["ser_report://main"], "max_requests_per_minute": "1000"}
    result = modinput.validate(setup["script"], "ser_report://good", stanza, **setup["kwargs"])
    assert result.ok, result.message


def test_the_token_is_reused_across_runs_from_encrypted_storage(
    setup, live_sim, splunkd, secret_scan
):
    """splunkd starts a new process every interval: the second run reuses the token
    kept in storage/passwords instead of asking for a new one; it never reaches a
    log, an event or a .conf file."""
    stanzas, _ = backfill(setup, 6)
    first = run(setup, stanzas)
    first.assert_clean_exit()
    for token in list(live_sim._tokens):
        secret_scan.add(token, name="ser access token")
    forget_checkpoint(splunkd)  # so that the second run calls the API again
    second = run(setup, stanzas)
    second.assert_clean_exit()
    assert len(summaries(second.events)) == len(summaries(first.events)) > 0
    secret_scan.watch("first run", first)
    secret_scan.watch("second run", second)
    assert live_sim.token_requests == 1
    realm = "__REST_CREDENTIAL__#TA_mailsec#token_cache"
    assert splunkd.get_password(realm, "ser_report.main.ser_access_token")


def test_an_expired_cached_token_is_replaced_once(setup, live_sim, splunkd):
    stanzas, _ = backfill(setup, 6)
    first = run(setup, stanzas)
    first.assert_clean_exit()
    live_sim.expire_tokens()  # the cached token is now refused with 401
    forget_checkpoint(splunkd)
    second = run(setup, stanzas)
    second.assert_clean_exit()
    assert len(summaries(second.events)) == len(summaries(first.events)) > 0
    assert live_sim.token_requests == 2


def forget_checkpoint(splunkd) -> None:
    from mailsec.adapters.kvstore import KVStoreCheckpointStore
    from mailsec.adapters.splunkd import Splunkd

    store = KVStoreCheckpointStore(
        Splunkd(splunkd.server_uri, splunkd.session_key), "ta_mailsec_ser_report_checkpoints"
    )
    store.delete("main")


def test_two_inputs_on_one_account_share_its_rate_limit(installed_app, splunkd, splunk_home, ca):
    """Two ser_report processes polling one account at once take their requests from
    one per-account bucket: together they stay within one input's rate (capacity +
    rate x time), where each on its own would spend all of it."""
    from ser.simulator import SUMMARY_PATH

    with SerSimulator(ca, clock=RealClock(), pending_messages=False) as sim:
        splunkd.add_account(
            "ser_account", "acme", sim.account_fields(), encrypted={"client_secret"}
        )
        start = int(time.time() // HOUR * HOUR - 41 * HOUR)
        common = {"account": "acme", "index": "mail", "interval": "300", "window": "1h",
                  "start_date": iso_z(start), "revisit_days": "0",
                  "max_requests_per_minute": "600"}  # fmt: skip
        where = dict(
            server_uri=splunkd.server_uri, session_key=splunkd.session_key, splunk_home=splunk_home
        )
        script = installed_app / "bin" / "ser_report.py"
        with modinput.start(script, {"ser_report://one": common}, **where) as one, \
                modinput.start(script, {"ser_report://two": common}, **where) as two:  # fmt: skip
            assert one.wait(timeout=120) == 0 and two.wait(timeout=120) == 0
        times = sorted(e.at for e in sim.log if e.path == SUMMARY_PATH)
    # each input: 40 or 41 windows and one licence-to-date call
    assert len(times) >= 80
    # client_rate_limiter(600): 10 in the bucket, 578 a minute
    rate, capacity = 578 / 60.0, 10
    assert len(times) <= capacity + rate * (times[-1] - times[0]) + 2
    assert (splunk_home / "var/run/splunk/TA_mailsec/rate_limits").is_dir()
