"""Tokens, answer formats, 429 / 5xx / 4xx handling and the entitlement event."""

from __future__ import annotations

import logging

import pytest
import requests

from mailsec.core.timeutil import iso_z
from ser.conftest import INPUT, T0
from ser.simulator import SUMMARY_PATH, TOKEN_PATH, expected_records

HOUR = 3600
START = T0 - 13 * HOUR  # 12 windows at 12:00 with settle_minutes=10


def strip_ids(records):
    return sorted(
        ({k: v for k, v in r.items()} for r in records),
        key=lambda r: (r["window_start"], r["application_user_name"]),
    )


def test_uuencoded_answers_give_the_same_events_as_json(ca, clock, harness, sim):
    harness.cycle(start_date=iso_z(START))
    as_json = strip_ids(harness.summaries())
    sim.answer_format = "uu"
    harness.sink.events.clear()
    harness.checkpoints.delete(INPUT)
    harness.cycle(start_date=iso_z(START))
    assert sim.count(SUMMARY_PATH, 200) == 2 * (12 + 1)
    assert strip_ids(harness.summaries()) == as_json  # event_id included
    assert len(as_json) > 12


def test_a_token_is_reused_and_renewed_shortly_before_it_expires(harness, sim, clock):
    # A day of 15-minute windows at 12 requests a minute takes about 10 minutes of
    # (simulated) time: longer than the 5-minute tokens this server hands out.
    sim.expires_in = 300
    stats = harness.cycle(start_date=iso_z(T0 - 86400), window="15m", max_requests_per_minute=12)
    assert stats["error"] is None
    token_times = [q.at for q in sim.log if q.path == TOKEN_PATH]
    assert clock.now() - T0 > 1.5 * 300
    assert 2 <= len(token_times) <= (clock.now() - T0) // 270 + 1
    # each renewal came in the token's last 10 % (30 s), never after it expired
    for earlier, later in zip(token_times, token_times[1:]):
        assert 270 <= later - earlier < 300
    assert sim.count(SUMMARY_PATH, 401) == 0
    assert sim.max_in_any_window() <= 12


def test_a_401_in_mid_run_gets_exactly_one_new_token(harness, sim, clock):
    run_calls = {"n": 0}
    original = harness.sink.write

    def write(events):
        run_calls["n"] += 1
        if run_calls["n"] == 4:
            sim.expire_tokens()  # revoked between two windows
        return original(events)

    harness.sink.write = write
    stats = harness.cycle(start_date=iso_z(START))
    assert stats["error"] is None
    assert sim.token_requests == 2
    assert sim.count(SUMMARY_PATH, 401) == 1
    assert len({r["window_start"] for r in harness.summaries()}) == 12


def test_a_second_401_after_the_new_token_ends_the_cycle(harness, sim, caplog):
    sim.fail_next(401, count=2, message="Invalid or expired token")
    with caplog.at_level(logging.ERROR):
        stats = harness.cycle(start_date=iso_z(START))
    assert stats["error"]
    assert sim.token_requests == 2
    assert harness.state["next_start"] == START
    assert "status=401" in caplog.text


def test_wrong_credentials_end_the_cycle_with_the_vendor_message(harness, sim, caplog):
    harness.account["client_secret"] = "not-the-secret"
    with caplog.at_level(logging.ERROR):
        stats = harness.cycle(start_date=iso_z(START))
    assert stats["error"] and sim.summary_requests == 0
    assert "Bad credentials" in caplog.text
    assert "not-the-secret" not in caplog.text


@pytest.mark.parametrize("mode", ["always", "never", "alternate"])
def test_runs_of_429_are_ridden_out(harness, sim, mode):
    sim.retry_after_mode = mode
    sim.limit_per_minute = 5  # the server allows far less than the client thinks
    stats = harness.cycle(start_date=iso_z(START), max_requests_per_minute=1000)
    assert stats["error"] is None
    assert sim.rejected_429 > 0
    assert len({r["window_start"] for r in harness.summaries()}) == 12
    assert sim.max_in_any_window() <= 5


def test_5xx_bursts_are_ridden_out(harness, sim):
    sim.fail_next(503, count=3)
    sim.fail_next(500, count=2)
    sim.fail_next(502, count=1, retry_after="2")
    stats = harness.cycle(start_date=iso_z(START))
    assert stats["error"] is None
    assert stats["http"]["status_5xx"] == 6
    assert len({r["window_start"] for r in harness.summaries()}) == 12


def test_a_5xx_burst_longer_than_the_retries_ends_the_cycle_unmoved(harness, sim):
    sim.fail_next(503, count=50)
    stats = harness.cycle(start_date=iso_z(START))
    assert "503" in stats["error"]
    assert harness.state["next_start"] == START
    assert harness.summaries() == []


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "Invalid startTimeStamp: use yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"),
        (403, "This API key is not entitled to SER reports"),
        (404, "No such customer"),
    ],
)
def test_4xx_ends_the_cycle_with_the_reason_and_an_unmoved_checkpoint(
    harness, sim, caplog, status, message
):
    harness.cycle(start_date=iso_z(START))
    done = harness.state["next_start"]
    written = len(harness.sink.events)
    harness.clock.advance(3 * HOUR)
    sim.fail_next(status, message=message)
    with caplog.at_level(logging.ERROR):
        stats = harness.cycle(start_date=iso_z(START))
    assert str(status) in stats["error"]
    assert harness.state["next_start"] == done
    assert len(harness.sink.events) == written
    assert f"status={status}" in caplog.text and message in caplog.text
    assert sim.count(SUMMARY_PATH, status) == 1  # not retried
    # the next interval goes on from the same place
    harness.cycle(start_date=iso_z(START))
    assert harness.state["next_start"] == done + 3 * HOUR


def test_a_forbidden_key_gets_403_and_moves_nothing(harness, sim, caplog):
    sim.forbidden = True
    with caplog.at_level(logging.ERROR):
        stats = harness.cycle(start_date=iso_z(START))
    assert "403" in stats["error"]
    assert harness.state["next_start"] == START
    assert "not entitled" in caplog.text


def test_the_simulator_refuses_malformed_timestamps(sim, tmp_path):
    verify = str(sim.ca.write(tmp_path))
    form = {
        "grant_type": "client_credentials",
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
    }
    token = requests.post(sim.url + TOKEN_PATH, data=form, verify=verify, timeout=5).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    for bad in ("2024-06-01T00:00:00Z", "2024-06-01", "2024-13-01T00:00:00.000Z"):
        answer = requests.get(
            sim.url + SUMMARY_PATH,
            params={"startTimeStamp": bad},
            headers=headers,
            verify=verify,
            timeout=5,
        )
        assert answer.status_code == 400, bad
        assert "yyyy-MM-dd" in answer.json()["message"]


def test_entitlement_event_has_exact_used_bytes_once_a_day(harness, sim, clock):
    harness.cycle(start_date=iso_z(START))
    (event,) = harness.entitlements()
    next_start = harness.state["next_start"]
    used = sum(
        r["message_size_total"]
        for r in expected_records(sim, sim.license_start, next_start).values()
    )
    assert event["used_bytes"] == used
    assert event["used_until"] == iso_z(next_start)
    assert event["annual_throughput"] == sim.annual_throughput
    assert event["used_percent"] == round(100 * used / sim.annual_throughput, 4)
    assert event["license_start"] == iso_z(sim.license_start)
    assert event["license_end"] == iso_z(sim.license_end)
    # later the same day: no new entitlement event
    clock.advance(2 * HOUR)
    harness.cycle(start_date=iso_z(START))
    assert len(harness.entitlements()) == 1
    # a changed entitlement is written at once
    sim.annual_throughput *= 2
    clock.advance(HOUR)
    harness.cycle(start_date=iso_z(START))
    assert len(harness.entitlements()) == 2
    assert harness.entitlements()[-1]["annual_throughput"] == sim.annual_throughput
    # a new UTC day: one more
    clock.advance(12 * HOUR)
    harness.cycle(start_date=iso_z(START))
    assert len(harness.entitlements()) == 3


def test_unknown_fields_are_kept_and_missing_counts_are_zero(harness, sim):
    sim.omit_zero_counts = True
    sim.extra_fields = True
    harness.cycle(start_date=iso_z(START))
    records = harness.summaries()
    assert all(r["applicationId"].startswith("app-") for r in records)
    assert all(r["status_quarantined"] == 0 for r in records)
    assert all(r["dsn_3xx"] == 0 for r in records)
    by_key = {(r["window_start"], r["application_user_name"]): r for r in records}
    for i in range(12):
        ws = START + i * HOUR
        for identity, counts in expected_records(sim, ws, ws + HOUR).items():
            record = by_key[(iso_z(ws), identity[1])]
            assert all(record[k] == v for k, v in counts.items())


def test_a_cached_token_belongs_to_its_client_id(sim):
    """A cached token is reused only by the client ID and token URL that obtained it;
    an unreadable cache entry costs a token, nothing more."""
    from mailsec.core.http import HttpClient
    from mailsec.core.secrets import MemorySecretCache
    from mailsec.ser.client import TOKEN_CACHE_NAME, SerClient
    from mailsec.ser.config import SerAccount

    account = SerAccount.from_fields(sim.account_fields())
    with HttpClient(ca_bundle_pem=account.ca_bundle) as http:
        cache = MemorySecretCache()
        first = SerClient(account, http, token_cache=cache, clock=sim.clock.now)
        first.token()
        assert (
            SerClient(account, http, token_cache=cache, clock=sim.clock.now)._token == first._token
        )
        other = SerAccount.from_fields(sim.account_fields(client_id="another-client"))
        assert SerClient(other, http, token_cache=cache, clock=sim.clock.now)._token is None
        cache.set(TOKEN_CACHE_NAME, "not json")
        assert SerClient(account, http, token_cache=cache, clock=sim.clock.now)._token is None
    assert sim.token_requests == 1
