"""The adapter's batched event writer gives exactly splunklib's event stream."""

from __future__ import annotations

import io
import logging

import pytest
from splunklib.modularinput import Event as SplunkEvent
from splunklib.modularinput.event_writer import EventWriter

from mailsec.adapters.modinput import SplunkEventSink
from mailsec.core.events import build_event

FIELDS = [
    {"ip_address": "198.18.0.1", "top_url": "/v1/a?x=1&y=<2>", "ip_city": "São Paulo"},
    {"ip_isp": "Ünïcode & <markup> \"quotes\" 'apostrophes'", "emoji": "🤖"},
    {"bot_reason": ["Flooder", "Content Robber"], "call_count": 274529},
]


def splunklib_stream(events, default_index, full_name) -> str:
    out = io.StringIO()
    writer = EventWriter(output=out)
    for event in events:
        writer.write_event(
            SplunkEvent(
                data=event.to_json(),
                time=f"{event.time:.3f}",
                index=event.index or default_index,
                sourcetype=event.sourcetype,
                source=event.source or full_name,
                host=event.host,
                done=True,
                unbroken=True,
            )
        )
    return out.getvalue()


def test_batched_writes_equal_splunklib_event_by_event():
    events = [
        build_event("apigee:sense:bot", 1539105912.5 + n, fields, (n,), host="hf-1" if n else None)
        for n, fields in enumerate(FIELDS)
    ]
    events.append(build_event("apigee:sense:report", 1539105912, {"org": "o"}, ("r",), index="x"))
    out = io.StringIO()
    logger = logging.getLogger("test.stream")
    sink = SplunkEventSink(EventWriter(output=out), logger, "sense_listener://a", "sense")
    assert sink.write(events[:2]) == 2
    assert sink.write([]) == 0
    assert sink.write(events[2:]) == 2
    assert out.getvalue() == splunklib_stream(events, "sense", "sense_listener://a")
    assert out.getvalue().count("<stream>") == 1


def test_a_sense_report_is_written_byte_for_byte_as_splunklib_writes_it():
    """Pre-encoded bot events and the escaping done once per run of events, against
    splunklib's writer event by event (non-ASCII, XML-unsafe characters, markup)."""
    from mailsec.sense.report import build_events, parse_report
    from sense.sender import ENCODINGS, encode, make_report
    from sense.test_report import RECEIVED, odd_report

    for n, report in enumerate([odd_report(1), odd_report(2), make_report(300, seed=3)]):
        parsed = parse_report(encode(report, ENCODINGS[n]))
        events = build_events(
            parsed, source_ip="192.0.2.7", received_at=RECEIVED, host="h<&>" if n else None
        )
        out = io.StringIO()
        sink = SplunkEventSink(EventWriter(output=out), logging.getLogger("t"), "sense://é", "x")
        assert sink.write(events) == len(events)
        assert out.getvalue() == splunklib_stream(events, "x", "sense://é")


@pytest.mark.parametrize("markup", ["", "&", "<", ">", "&<", "<>", "&>", "a&b<c>d&amp;", "]]>"])
def test_each_markup_character_alone_or_together_is_escaped_as_splunklib_does(markup):
    """The escaping skips the characters a stream does not hold: each of them, alone or
    with the others, in the data and in the event head, still gives splunklib's bytes."""
    events = [
        build_event("st", 1539105912, {"v": f"x{markup}y", "n": n}, (n,), source=f"s{markup}")
        for n in range(3)
    ]
    out = io.StringIO()
    sink = SplunkEventSink(EventWriter(output=out), logging.getLogger("t"), "sense://a", "x")
    sink.write(events)
    assert out.getvalue() == splunklib_stream(events, "x", "sense://a")
