"""Reading Sense reports in every encoding, and the events built from them."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from mailsec.sense.report import (
    BOT_SOURCETYPE,
    REPORT_SOURCETYPE,
    NotASenseReport,
    build_events,
    parse_report,
)
from sense.sender import ENCODINGS, encode, make_report

RECEIVED = datetime(2018, 10, 9, 17, 25, 14, tzinfo=timezone.utc)

# The vendor's own sample (seeds/002), byte for byte in content.
VENDOR_SAMPLE = {
    "text": {
        "metadata": {
            "org": "my-org",
            "env": "prod",
            "reportTimestamp": "2018-10-09T17:25:12Z",
            "messageId": "1539105912220",
        },
        "totalNumberOfBots": 1,
        "bots": [
            {
                "ipAddress": "11.111.111.11",
                "botDetectedLast": "2018-10-0917:04:48Z",
                "ipIsp": "Their ISP",
                "ipCountry": "United States",
                "botReason": ["Flooder", "Content Robber"],
                "callCount": "274529",
                "topUrl": "/v1/my/url",
                "ipCity": "Los Angeles",
            }
        ],
    }
}


def events_of(body: bytes) -> list:
    report = parse_report(body)
    return build_events(report, source_ip="192.0.2.7", received_at=RECEIVED)


def test_the_vendor_sample_gives_the_spec_fields():
    bot, report = events_of(json.dumps(json.dumps(VENDOR_SAMPLE)).encode())
    assert bot.sourcetype == BOT_SOURCETYPE
    assert report.sourcetype == REPORT_SOURCETYPE
    # _time is reportTimestamp
    assert (
        bot.time
        == report.time
        == datetime(2018, 10, 9, 17, 25, 12, tzinfo=timezone.utc).timestamp()
    )
    assert {k: v for k, v in bot.data.items() if k != "event_id"} == {
        "time": "2018-10-09T17:25:12.000000Z",
        "org": "my-org",
        "env": "prod",
        "message_id": "1539105912220",
        "report_timestamp": "2018-10-09T17:25:12Z",
        "rank": 1,
        "ip_address": "11.111.111.11",
        "bot_detected_last": "2018-10-09T17:04:48Z",  # the sample's missing T restored
        "ip_isp": "Their ISP",
        "ip_country": "United States",
        "ip_city": "Los Angeles",
        "bot_reason": ["Flooder", "Content Robber"],
        "call_count": 274529,  # an integer, not the string Sense sends
        "top_url": "/v1/my/url",
        "vendor_product": "Apigee Sense",
    }
    assert report.data["total_number_of_bots"] == 1
    assert report.data["bots_in_report"] == 1
    assert report.data["source_ip"] == "192.0.2.7"
    assert report.data["received_at"] == "2018-10-09T17:25:14.000000Z"
    assert len(bot.event_id) == 32 and bot.event_id != report.event_id


@pytest.mark.parametrize("bots", [1, 17, 300])
def test_every_encoding_gives_the_same_events_field_for_field(bots):
    report = make_report(bots, seed=bots)
    canonical = [(e.sourcetype, e.time, e.data) for e in events_of(encode(report, "object"))]
    assert len(canonical) == bots + 1
    for encoding in ENCODINGS[1:]:
        body = encode(report, encoding)
        assert body != encode(report, "object")  # the encoding really differs
        got = [(e.sourcetype, e.time, e.data) for e in events_of(body)]
        assert got == canonical, encoding


def test_bot_events_are_exactly_what_the_core_event_builder_makes():
    from mailsec.core.events import build_event

    report = parse_report(encode(make_report(40, seed=5), "as_sense_sample"))
    events = build_events(report, source_ip="192.0.2.7", received_at=RECEIVED, source="s")
    for event in events[:-1]:
        fields = {k: v for k, v in event.data.items() if k not in ("time", "event_id")}
        key = (report.org, report.env, report.message_id, fields["rank"], fields["ip_address"])
        expected = build_event(event.sourcetype, report.report_timestamp, fields, key, source="s")
        assert event == expected
        assert list(event.data) == list(expected.data)  # the same key order, "time" first


# Values that test the bot events' template: quotes, backslashes, control characters,
# markup, non-ASCII, astral characters, and characters XML cannot carry (which make
# the whole event ASCII-escaped). Identity fields (org, env, messageId, ipAddress)
# are hashed as UTF-8, so they hold no lone surrogate.
ODD_TEXT = ['q"uo\\te', "ctl\x00\x01\n\t\x1f", "</data><&>]]>", "São Paulo", "🤖", "\u2028"]
XML_UNSAFE = ["lone\ud800", "\udfffé", "non\ufffe", "\uffff"]


def odd_report(seed: int) -> dict:
    import random

    rng = random.Random(seed)
    report = make_report(25, seed=seed)
    metadata = report["text"]["metadata"]
    for key in ("org", "env", "messageId"):
        metadata[key] = rng.choice(ODD_TEXT) + metadata[key]
    for bot in report["text"]["bots"]:
        bot["ipAddress"] = rng.choice(ODD_TEXT) + bot["ipAddress"]
        for key in ("ipIsp", "ipCountry", "ipCity", "topUrl"):
            bot[key] = rng.choice([bot[key], None, "", 7, *ODD_TEXT, *XML_UNSAFE])
        bot["botReason"] = rng.choice([[], ["Flooder", rng.choice(XML_UNSAFE)], ODD_TEXT[:3]])
        bot["callCount"] = rng.choice([bot["callCount"], None, "12", "x", 2**70])
    return report


@pytest.mark.parametrize("seed", range(6))
def test_bot_events_are_byte_for_byte_what_encoding_their_fields_gives(seed):
    """The bot events' JSON is built from a template; it must be the very text the
    core encoder writes for the same fields, and the same after the XML-safety check."""
    from mailsec.core.events import Event, build_event

    reports = [odd_report(seed), make_report(300, seed=seed)]
    for report in reports:
        parsed = parse_report(encode(report, ENCODINGS[seed % len(ENCODINGS)]))
        events = build_events(parsed, source_ip="192.0.2.7", received_at=RECEIVED, source="s")
        for bot, event in zip(parsed.bots, events[:-1]):
            fields = {
                "org": parsed.org,
                "env": parsed.env,
                "message_id": parsed.message_id,
                "report_timestamp": parsed.report_timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "rank": bot.rank,
                "ip_address": bot.ip_address,
                "bot_detected_last": bot.bot_detected_last,
                "ip_isp": bot.ip_isp,
                "ip_country": bot.ip_country,
                "ip_city": bot.ip_city,
                "bot_reason": list(bot.bot_reason),
                "call_count": bot.call_count,
                "top_url": bot.top_url,
                "vendor_product": "Apigee Sense",
            }
            key = (parsed.org, parsed.env, parsed.message_id, bot.rank, bot.ip_address)
            expected = build_event(BOT_SOURCETYPE, parsed.report_timestamp, fields, key, source="s")
            as_dict = Event(event.time, event.sourcetype, dict(expected.data), source="s")
            assert event.json_text() == as_dict.json_text()
            assert event.to_json() == as_dict.to_json() == expected.to_json()
        if report is reports[0]:
            assert any("\\ud800" in e.to_json() or "\\udfff" in e.to_json() for e in events)


def test_300_bots_give_300_bot_events_and_one_report_event():
    events = events_of(encode(make_report(300), "as_sense_sample"))
    kinds = [e.sourcetype for e in events]
    assert kinds.count(BOT_SOURCETYPE) == 300
    assert kinds.count(REPORT_SOURCETYPE) == 1
    assert len({e.event_id for e in events}) == 301
    assert [e.data["rank"] for e in events[:-1]] == list(range(1, 301))


def test_event_ids_are_stable_and_scoped_by_org_env_and_message():
    body = encode(make_report(3, message_id="42"), "object")
    first, again = events_of(body), events_of(body)
    assert [e.event_id for e in first] == [e.event_id for e in again]
    other_env = events_of(encode(make_report(3, message_id="42", env="test"), "object"))
    assert not {e.event_id for e in first} & {e.event_id for e in other_env}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON array"),
        (b'"just a string"', "not valid JSON"),
        (json.dumps(json.dumps(json.dumps(json.dumps({"text": {}})))).encode(), "nested"),
        (b'{"bots": []}', "no 'text'"),
        (b'{"text": 5}', "'text' is a JSON number"),
        (b'{"text": "{broken"}', "'text' is not valid JSON"),
        (b'{"text": {"bots": []}}', "no 'metadata'"),
        (b'{"text": {"metadata": "x"}}', "no 'metadata'"),
        (b'{"text": {"metadata": {"org": "o", "env": "e", "reportTimestamp": "2018-10-09T17:25:12Z"}}}', "messageId"),
        (b'{"text": {"metadata": {"org": "", "env": "e", "reportTimestamp": "2018-10-09T17:25:12Z", "messageId": "1"}}}', "metadata.org"),
        (b'{"text": {"metadata": {"org": "o", "env": "e", "reportTimestamp": "yesterday", "messageId": "1"}}}', "reportTimestamp"),
        (b'{"text": {"metadata": {"org": "o", "env": "e", "reportTimestamp": "2018-10-09T17:25:12Z", "messageId": "1"}, "bots": {}}}', "'bots' is a JSON object"),
    ],
)  # fmt: skip
def test_a_body_that_is_not_a_sense_report_is_refused_with_its_reason(body, reason):
    with pytest.raises(NotASenseReport) as error:
        parse_report(body)
    assert reason in str(error.value)


def test_a_bad_bot_entry_is_skipped_and_counted_the_rest_kept():
    report = make_report(3, message_id="7")
    bots = report["text"]["bots"]
    bots.insert(1, "not an object")
    bots.append({"ipCountry": "Nowhere"})  # no ipAddress
    bots[0]["callCount"] = "lots"
    bots[2]["botDetectedLast"] = "soon"
    parsed = parse_report(encode(report, "object"))
    assert [b.ip_address for b in parsed.bots] == [
        bots[0]["ipAddress"],
        bots[2]["ipAddress"],
        bots[3]["ipAddress"],
    ]
    assert parsed.bots_skipped == 2
    assert parsed.bots[0].call_count is None
    assert parsed.bots[1].bot_detected_last is None
    assert len(parsed.problems) == 4
    events = build_events(parsed, source_ip="192.0.2.7", received_at=RECEIVED)
    assert events[-1].data["bots_in_report"] == 3
    assert events[-1].data["bots_skipped"] == 2


def test_a_report_without_bots_gives_only_the_report_event():
    # not something Sense sends (it sends nothing without activity): made by hand
    report = make_report(1, message_id="9")
    report["text"]["bots"] = []
    report["text"]["totalNumberOfBots"] = 0
    events = events_of(encode(report, "text_string"))
    assert [e.sourcetype for e in events] == [REPORT_SOURCETYPE]
    assert events[0].data["total_number_of_bots"] == 0


def test_bot_reason_as_a_comma_separated_string_and_counts_with_separators():
    report = make_report(1, message_id="11")
    report["text"]["bots"][0].update(botReason="Flooder, Content Robber", callCount="1,024")
    (bot,) = parse_report(encode(report, "object")).bots
    assert bot.bot_reason == ("Flooder", "Content Robber")
    assert bot.call_count == 1024


def test_a_byte_order_mark_is_tolerated():
    body = b"\xef\xbb\xbf" + encode(make_report(2), "object")
    assert len(parse_report(body).bots) == 2


@pytest.mark.parametrize(
    ("sent", "count"),
    [("274529", 274529), (" 42 ", 42), ("1,024", 1024), (7, 7), (7.0, 7), ("0", 0),
     ("²", None), ("-3", None), ("1.5", None), (True, None), ("", None), ([], None)],
)  # fmt: skip
def test_call_counts_in_every_form_and_what_is_not_a_count(sent, count):
    report = make_report(1, message_id="12")
    report["text"]["bots"][0]["callCount"] = sent
    parsed = parse_report(encode(report, "object"))
    assert parsed.bots[0].call_count == count
    # what is not a count is logged (an empty value is just absent), never fatal
    assert len(parsed.problems) == (count is None and sent != "")


@pytest.mark.parametrize(
    ("sent", "canonical"),
    [("2018-10-09T17:04:48Z", "2018-10-09T17:04:48Z"), ("2018-10-0917:04:48Z", "2018-10-09T17:04:48Z"),
     ("2020-02-29T23:59:59Z", "2020-02-29T23:59:59Z"), ("2018-10-09T17:04:48.250Z", "2018-10-09T17:04:48.250000Z"),
     ("2018-10-09T19:04:48+02:00", "2018-10-09T17:04:48Z"),
     ("2018-02-29T10:00:00Z", None), ("2018-04-31T10:00:00Z", None), ("2018-13-01T10:00:00Z", None),
     ("2018-10-00T10:00:00Z", None), ("2018-10-09T24:00:00Z", None), ("2018-10-09T23:60:00Z", None),
     ("2018-10-09T23:59:60Z", None), ("2018-10-09T17:04:48Zjunk", None), ("soon", None)],
)  # fmt: skip
def test_bot_detected_last_is_made_canonical_or_left_empty(sent, canonical):
    report = make_report(1, message_id="13")
    report["text"]["bots"][0]["botDetectedLast"] = sent
    (bot,) = parse_report(encode(report, "object")).bots
    assert bot.bot_detected_last == canonical


def test_lone_surrogates_in_identity_fields_give_events_not_a_crash():
    """A "\\ud800" escape in org, env, messageId or an IP would crash utf-8 hashing:
    the report would be answered 500 and re-posted forever."""
    from mailsec.sense.dedupe import message_key

    report = make_report(2, seed=7)
    report["text"]["metadata"]["org"] = "org\ud800"
    report["text"]["metadata"]["messageId"] = "id\udfff"
    report["text"]["bots"][0]["ipAddress"] = "10.0.0.1\ud83d"
    body = json.dumps(report).encode()  # ASCII escapes, as a sender writes them
    events = events_of(body)
    assert len(events) == 3
    assert len({event.data["event_id"] for event in events}) == 3
    for event in events:
        assert "\ud800" not in event.to_json()  # written ASCII-escaped
    assert len(message_key(["org\ud800", "env", "id\udfff"])) == 32


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r["text"]["bots"][0].update(callCount="9" * 5000),  # int() refuses > 4300 digits
        lambda r: r["text"]["bots"][0].update(botDetectedLast="9999-12-31T23:59:59-12:00"),
        lambda r: r["text"]["metadata"].update(reportTimestamp="9999-12-31T23:59:59-12:00"),
    ],
)
def test_extreme_values_give_a_report_or_a_400_reason_never_a_crash(mutate):
    from mailsec.sense.report import NotASenseReport

    report = make_report(3, seed=11)
    mutate(report)
    body = json.dumps(report).encode()
    try:
        events = events_of(body)
    except NotASenseReport as refused:
        assert str(refused)  # a 400 with its reason
    else:
        assert len(events) == 4


def test_a_deeply_nested_body_is_a_400_not_a_500():
    from mailsec.sense.report import NotASenseReport, parse_report

    with pytest.raises(NotASenseReport, match=r"nested too deeply|cannot be read"):
        parse_report(b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")


@pytest.mark.parametrize(
    ("sent", "reasons"),
    [(["Flooder", " Content Robber ", ""], ("Flooder", "Content Robber")),
     ([" a", 3, None, {}, [], "b ", 1.5], ("a", "3", "b", "1.5")),  # not all strings: read one by one
     ("Flooder, ,Content Robber", ("Flooder", "Content Robber")), ([], ()), (None, ()), (7, ())],
)  # fmt: skip
def test_bot_reasons_in_every_form(sent, reasons):
    report = make_report(1, message_id="14")
    report["text"]["bots"][0]["botReason"] = sent
    (bot,) = parse_report(encode(report, "object")).bots
    assert bot.bot_reason == reasons


def test_bot_times_are_read_alike_whether_remembered_or_not():
    """Short botDetectedLast texts are remembered across bots and reports (they
    repeat within a report's 5 minutes); long ones are read each time, so that what
    a sender can make the listener keep stays small."""
    from mailsec.sense import report as module

    long_forms = ["2018-10-09T17:04:48.250000+00:00" + " " * 20, "9" * 5000, "x" * 41]
    sent = ["2018-10-0917:04:48Z", "2018-10-09T19:04:48+02:00", "soon", *long_forms]
    report = make_report(len(sent), message_id="15")
    for bot, value in zip(report["text"]["bots"], sent):
        bot["botDetectedLast"] = value
    module._cached_canonical_time.cache_clear()
    for _ in range(2):
        bots = parse_report(encode(report, "object")).bots
        assert [bot.bot_detected_last for bot in bots] == [
            module._canonical_time(value) for value in sent
        ]
    info = module._cached_canonical_time.cache_info()
    assert info.currsize == 3 and info.hits == 3  # the short ones, found the second time
