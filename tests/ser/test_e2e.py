"""ser_report as splunkd runs it: the installed add-on's script, XML on stdin, the
splunkd stand-in for the account, secrets and KV-store checkpoint, the simulator over
TLS trusted through the account's ca_bundle."""

from __future__ import annotations

import random
import time

import pytest

from harness import modinput
from mailsec.core.timeutil import iso_z
from ser.simulator import SerSimulator, SimClock, expected_records

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
    start = int(now // HOUR * HOUR - 3 * 24 * HOUR)
    stanza = {
        "account": "acme",
        "index": "mail",
        "interval": "300",
        "window": "1h",
        "start_date": iso_z(start),
    }
    kwargs = dict(
        server_uri=splunkd.server_uri, session_key=splunkd.session_key, splunk_home=splunk_home
    )
    return {
        "script": installed_app / "bin" / "ser_report.py",
        "stanzas": {"ser_report://main": stanza},
        "kwargs": kwargs,
        "start": start,
        # the windows that ended settle_minutes before the run
        "windows": [
            (start + i * HOUR, start + (i + 1) * HOUR)
            for i in range(int((now - 600 - start) // HOUR))
        ],
    }


def summaries(events) -> list[dict]:
    return [e.json() for e in events if e.sourcetype == "proofpoint:ser:summary"]


def test_three_day_backfill_through_the_runner_is_exact(
    setup, live_sim, splunkd, splunk_home, secret_scan
):
    result = modinput.run(setup["script"], setup["stanzas"], timeout=120, **setup["kwargs"])
    secret_scan.watch("ser_report run", result)  # events, stderr; the logs are watched too
    result.assert_clean_exit()
    records = summaries(result.events)
    seen = {}
    for r in records:
        key = (r["window_start"], r["application_user_name"])
        assert key not in seen
        seen[key] = r
    assert {e.index for e in result.events} == {"mail"}
    assert all(e.source == "ser_report://main" for e in result.events)
    for ws, we in setup["windows"]:
        truth = expected_records(live_sim, ws, we)
        got = {k[1]: v for k, v in seen.items() if k[0] == iso_z(ws)}
        assert set(got) == {identity[1] for identity in truth}
        for identity, counts in truth.items():
            assert all(got[identity[1]][k] == v for k, v in counts.items())
    assert len(seen) == sum(len(expected_records(live_sim, ws, we)) for ws, we in setup["windows"])
    (entitlement,) = [e.json() for e in result.events if e.sourcetype.endswith("entitlement")]
    assert entitlement["used_bytes"] > 0
    state = splunkd.kv_records("ta_mailsec_ser_report_checkpoints")["main"]
    assert "next_start" in str(state)
    assert live_sim.token_requests == 1
    log = (splunk_home / "var/log/splunk/ta_mailsec_ser_report_main.log").read_text()
    assert "ser_backfill phase=done" in log and "windows_left=0" in log
    assert "action=run_succeeded" in log


def test_killed_at_a_random_point_and_restarted_loses_nothing(setup, live_sim):
    kill_at = random.Random().randint(5, 150)
    first = modinput.run(
        setup["script"],
        setup["stanzas"],
        timeout=120,
        kill_when=lambda events: len(events) >= kill_at,
        **setup["kwargs"],
    )
    second = modinput.run(setup["script"], setup["stanzas"], timeout=120, **setup["kwargs"])
    second.assert_clean_exit()
    by_id: dict[str, dict] = {}
    for record in summaries(first.events) + summaries(second.events):
        assert by_id.setdefault(record["event_id"], record) == record, f"kill_at={kill_at}"
    expected = sum(len(expected_records(live_sim, ws, we)) for ws, we in setup["windows"])
    assert len(by_id) == expected, f"kill_at={kill_at}"


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
    stanza = {**setup["stanzas"]["ser_report://main"], **params}
    result = modinput.validate(setup["script"], "ser_report://bad", stanza, **setup["kwargs"])
    assert not result.ok
    assert field in result.message


def test_validation_accepts_good_values(setup):
    stanza = {**setup["stanzas"]["ser_report://main"], "max_requests_per_minute": "1000"}
    result = modinput.validate(setup["script"], "ser_report://good", stanza, **setup["kwargs"])
    assert result.ok, result.message


def test_the_token_is_reused_across_runs_from_encrypted_storage(
    setup, live_sim, splunkd, secret_scan
):
    """splunkd starts a new process every interval: the second run reuses the token
    kept in storage/passwords instead of asking for a new one; it never reaches a
    log, an event or a .conf file."""
    first = modinput.run(setup["script"], setup["stanzas"], timeout=120, **setup["kwargs"])
    first.assert_clean_exit()
    for token in list(live_sim._tokens):
        secret_scan.add(token, name="ser access token")
    forget_checkpoint(splunkd)  # so that the second run calls the API again
    second = modinput.run(setup["script"], setup["stanzas"], timeout=120, **setup["kwargs"])
    second.assert_clean_exit()
    assert len(summaries(second.events)) == len(summaries(first.events)) > 0
    secret_scan.watch("first run", first)
    secret_scan.watch("second run", second)
    assert live_sim.token_requests == 1
    realm = "__REST_CREDENTIAL__#TA_mailsec#token_cache"
    assert splunkd.get_password(realm, "ser_report.main.ser_access_token")


def test_an_expired_cached_token_is_replaced_once(setup, live_sim, splunkd):
    first = modinput.run(setup["script"], setup["stanzas"], timeout=120, **setup["kwargs"])
    first.assert_clean_exit()
    live_sim.expire_tokens()  # the cached token is now refused with 401
    forget_checkpoint(splunkd)
    second = modinput.run(setup["script"], setup["stanzas"], timeout=120, **setup["kwargs"])
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
