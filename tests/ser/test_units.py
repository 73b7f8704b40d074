"""Pure pieces: uudecoding, windows and schedule, flattening, rate limiter, config."""

from __future__ import annotations

import binascii
import json

import pytest

from mailsec.core.params import ConfigError
from mailsec.ser import windows as w
from mailsec.ser.client import decode_answer, uudecode
from mailsec.ser.config import SerInputConfig
from mailsec.ser.limits import client_rate_limiter
from mailsec.ser.report import entitlement_event, parse_summary, summary_events
from ser.simulator import uuencode

DOC = {"applicationUsers": [{"applicationName": "Ü-app", "status": {"total": 3}}] * 3}


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_uudecode_reads_what_an_encoder_writes(line_end):
    raw = json.dumps(DOC, ensure_ascii=False).encode("utf-8")
    text = uuencode(raw).replace("\n", line_end)
    assert uudecode(text) == raw
    assert decode_answer(text.encode("ascii")) == DOC


def test_uudecode_tolerates_spaces_for_zero_padding_and_no_end():
    raw = b"x" * 100
    lines = [
        binascii.b2a_uu(raw[i : i + 45], backtick=False).decode().rstrip("\n") for i in (0, 45, 90)
    ]
    padded = [line + "  " for line in lines]  # trailing garbage after the data
    assert uudecode("begin 600 f\n" + "\n".join(padded) + "\n") == raw


def test_uudecode_refuses_text_without_begin():
    with pytest.raises(ValueError):
        uudecode("hello\nend\n")


def test_decode_answer_refuses_garbage():
    with pytest.raises(ValueError):
        decode_answer(b"<html>maintenance</html>")


def test_windows_are_aligned_and_consecutive():
    start = w.align_down(1718020800 + 1234, 3600)
    assert w.window_after(start, 3600) == (start, start + 3600)
    assert w.count_windows(start, start + 3 * 3600 + 5, 3600) == 3
    assert w.count_windows(start, start + 10, 3600) == 0
    # after `window` changed to 1d, the walk goes on from the checkpoint to the day boundary
    day = w.align_down(start, 86400)
    assert w.window_after(start, 86400) == (start, day + 86400)


@pytest.mark.parametrize(
    ("days", "schedule"),
    [(7, (3600, 86400, 3 * 86400, 7 * 86400)), (3, (3600, 86400, 3 * 86400)),
     (2, (3600, 86400, 2 * 86400)), (1, (3600, 86400)), (0, ())],
)  # fmt: skip
def test_revisit_schedule_is_bounded_by_revisit_days(days, schedule):
    assert w.revisit_schedule(days) == schedule


def test_next_revisit_age_skips_ages_already_passed():
    schedule = w.revisit_schedule(7)
    assert w.next_revisit_age(schedule, 600) == 3600
    assert w.next_revisit_age(schedule, 3600) == 86400
    assert w.next_revisit_age(schedule, 2 * 86400) == 3 * 86400
    assert w.next_revisit_age(schedule, 7 * 86400) is None


def test_bad_records_are_skipped_or_zeroed_with_a_reason():
    summary = parse_summary(
        {
            "applicationUsers": [
                "not an object",
                {"applicationName": "A", "status": {"success": "7", "failure": "x"}},
                {"applicationName": "A", "status": {"success": 1}, "details": [1]},
            ],
            "entitlement": {"annual_throughput": 10},
            "newBlock": {},
        }
    )
    assert len(summary.users) == 1  # the two A entries share an identity: added up
    (user,) = summary.users
    assert user["success"] == 8 and user["failure"] == 0 and user["dsn_5xx"] == 0
    assert len(summary.problems) == 4
    assert parse_summary([1, 2]).problems


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-inf", 1e400, float("nan")])
def test_a_count_that_is_not_finite_is_zeroed_not_a_crash(bad):
    """json.loads accepts NaN and Infinity; int() of them raises, which would stop the
    input on that window for good."""
    summary = parse_summary(
        {
            "applicationUsers": [
                {"applicationName": "A", "status": {"success": 3, "tempFailure": bad}}
            ]
        }
    )
    (user,) = summary.users
    assert user["success"] == 3 and user["temp_failure"] == 0
    assert any("finite" in problem for problem in summary.problems)
    assert parse_summary(json.loads('{"applicationUsers": [{"status": {"total": NaN}}]}')).users


def test_unknown_vendor_fields_holding_nan_are_written_as_strict_json():
    """json reads NaN and writes it back bare, which Splunk's JSON parser refuses."""
    answer = json.loads(
        '{"applicationUsers": [{"applicationName": "A", "newScore": NaN,'
        ' "status": {"success": 1, "newStatus": Infinity}, "extra": {"x": [1, -Infinity]}}],'
        ' "entitlement": {"annual_throughput": 10, "newRatio": NaN}}'
    )
    summary = parse_summary(answer)
    (event,) = summary_events("acme", 0, 3600, 1, False, summary.users)
    data = json.loads(event.json_text(), parse_constant=lambda name: pytest.fail(name))
    assert data["newScore"] is None and data["status_newStatus"] is None
    assert data["extra"] == {"x": [1, None]} and data["success"] == 1
    assert sum("finite" in problem for problem in summary.problems) == 3
    entitlement = entitlement_event("acme", answer["entitlement"], 5, 3600, 7200)
    assert (
        json.loads(entitlement.json_text(), parse_constant=lambda n: pytest.fail(n))["newRatio"]
        is None
    )


def test_event_ids_depend_on_natural_key_and_revision_only():
    user = parse_summary({"applicationUsers": [{"applicationName": "A"}]}).users[0]
    first = summary_events("acme", 0, 3600, 1, False, [user])[0]
    again = summary_events("acme", 0, 3600, 1, False, [user])[0]
    revised = summary_events("acme", 0, 3600, 2, True, [user])[0]
    other_account = summary_events("other", 0, 3600, 1, False, [user])[0]
    assert first.event_id == again.event_id
    assert len({first.event_id, revised.event_id, other_account.event_id}) == 3
    assert first.time == 0.0 and first.data["window_end"] == "1970-01-01T01:00:00.000000Z"


@pytest.mark.parametrize("limit", [1, 2, 12, 60, 600, 900, 1000])
def test_the_client_bucket_never_exceeds_the_limit_in_any_minute(limit):
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    bucket = client_rate_limiter(limit, clock=lambda: now[0], sleep=sleep)
    times = []
    for _ in range(3 * limit + 5):
        bucket.acquire()
        times.append(now[0])
    left = 0
    for right, moment in enumerate(times):
        while times[left] <= moment - 60:
            left += 1
        assert right - left + 1 <= limit
    # and it is not needlessly slow: at least 95 % of the limit over the long run
    if limit >= 60:
        assert (len(times) - bucket.capacity) / times[-1] * 60 >= 0.95 * limit


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start_date": "yesterday"}, "start_date"),
        ({"window": "2h"}, "window"),
        ({"max_requests_per_minute": "1001"}, "max_requests_per_minute"),
        ({"max_requests_per_minute": "0"}, "max_requests_per_minute"),
        ({"revisit_days": "8"}, "revisit_days"),
        ({"settle_minutes": "-1"}, "settle_minutes"),
    ],
)
def test_config_refuses_bad_values_naming_the_field(params, field):
    with pytest.raises(ConfigError) as refused:
        SerInputConfig.from_params({"account": "acme", **params})
    assert refused.value.field == field


def test_config_defaults():
    config = SerInputConfig.from_params({"account": "acme"})
    assert (config.window.total_seconds(), config.settle.total_seconds()) == (3600, 600)
    assert (config.revisit_days, config.max_requests_per_minute) == (7, 900)
    assert config.start_date is None
