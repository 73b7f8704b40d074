from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mailsec.core import timeutil as t

UTC = timezone.utc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2018-10-0917:04:48Z", datetime(2018, 10, 9, 17, 4, 48, tzinfo=UTC)),  # Apigee sample
        ("2018-10-09T17:04:48Z", datetime(2018, 10, 9, 17, 4, 48, tzinfo=UTC)),
        ("2018-10-09 17:04:48", datetime(2018, 10, 9, 17, 4, 48, tzinfo=UTC)),
        ("2024-02-29T23:59:59.123Z", datetime(2024, 2, 29, 23, 59, 59, 123000, tzinfo=UTC)),
        ("2024-01-01T01:00:00+01:00", datetime(2024, 1, 1, 0, 0, tzinfo=UTC)),
        ("2024-01-01T00:00:00.123456789-0530", datetime(2024, 1, 1, 5, 30, 0, 123456, tzinfo=UTC)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
    ],
)
def test_parse_iso8601_variants(text, expected):
    assert t.parse_iso8601(text) == expected


@pytest.mark.parametrize(
    "bad", ["", "yesterday", "2024-13-01", "2024-01-01T25:00:00Z", "01/02/2024"]
)
def test_parse_iso8601_refuses(bad):
    with pytest.raises(ValueError):
        t.parse_iso8601(bad)


def test_vendor_formats_round_trip():
    moment = datetime(2024, 3, 5, 7, 8, 9, 987654, tzinfo=UTC)
    assert t.format_ser(moment) == "2024-03-05T07:08:09.987Z"
    assert t.format_google(moment) == "2024-03-05 07:08"
    assert t.parse_google("2024-03-05 07:08") == moment.replace(second=0, microsecond=0)
    assert t.iso_z(moment) == "2024-03-05T07:08:09.987654Z"
    assert t.parse_iso8601(t.iso_z(moment)) == moment


def test_naive_values_are_utc_and_epoch_converts():
    assert t.as_utc(datetime(2024, 1, 1)) == datetime(2024, 1, 1, tzinfo=UTC)
    assert t.as_utc(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert t.to_epoch(datetime(1970, 1, 2, tzinfo=UTC)) == 86400.0


def test_durations_and_alignment():
    assert t.parse_duration("15m") == timedelta(minutes=15)
    assert t.parse_duration("1d") == timedelta(days=1)
    for bad in ("0h", "1y", "h", ""):
        with pytest.raises(ValueError):
            t.parse_duration(bad)
    moment = datetime(2024, 3, 5, 7, 48, 9, 500000, tzinfo=UTC).timestamp()
    assert t.align_down(moment, 900) == datetime(2024, 3, 5, 7, 45, tzinfo=UTC).timestamp()
    assert t.align_down(moment, 86400) == datetime(2024, 3, 5, tzinfo=UTC).timestamp()
