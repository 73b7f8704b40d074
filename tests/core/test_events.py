from __future__ import annotations

import json
from datetime import datetime, timezone

from mailsec.core.events import ListSink, build_event, event_id


def test_event_json_starts_with_time_and_carries_event_id():
    when = datetime(2024, 1, 2, 3, 4, 5, 600000, tzinfo=timezone.utc)
    event = build_event("x:y", when, {"a": 1, "b": "é"}, natural_key=("acct", "k1"))
    text = event.to_json()
    assert text.startswith('{"time":"2024-01-02T03:04:05.600000Z",')
    assert "\n" not in text
    data = json.loads(text)
    assert data["a"] == 1 and data["b"] == "é"
    assert data["event_id"] == event.event_id == event_id("x:y", ("acct", "k1"))
    assert event.time == when.timestamp()


def test_event_id_is_stable_and_depends_on_key_revision_and_sourcetype():
    first = event_id("s", ["a", 1], revision=1)
    assert first == event_id("s", ("a", 1), revision=1)  # re-emitted unit: same id
    assert len({first, event_id("s", ["a", 1], 2), event_id("s", ["a", 2], 1),
                event_id("t", ["a", 1], 1)}) == 4  # fmt: skip


def test_list_sink_counts():
    sink = ListSink()
    event = build_event("s", 0, {}, ("k",))
    assert sink.write([event, event]) == 2
    assert len(sink.events) == 2


def test_characters_xml_cannot_carry_are_escaped():
    event = build_event("s", 0, {"a": "bad\ud800surrogate", "c": "ctl\x01", "u": "ü"}, ("k",))
    text = event.to_json()
    assert "\ud800" not in text and "\\ud800" in text
    assert "\x01" not in text
    assert json.loads(text)["u"] == "ü"
    assert "\x01" not in build_event("s", 0, {"c": "ctl\x01"}, ("k",)).to_json()
