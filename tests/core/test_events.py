from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from mailsec.core.events import Event, ListSink, build_event, event_id


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


ODD_VALUES = [
    {"s": "plain", "u": "São Paulo 🤖", "ctl": 'a\x01\n\t"\\', "sur": "bad\ud800x", "nc": "\uffff"},
    {"n": [0, -1, 2**70, 1.5, 1e300, float("nan"), float("inf"), True, False, None]},
    {"nested": {"list": [[], {}, ["x", {"y": ()}]], "tuple": (1, "two")}},
    {"other": datetime(2024, 1, 2, tzinfo=timezone.utc), "set-like": frozenset()},
    {3: "int key", 2.5: "float key", None: "null key", True: "bool key"},
    "a bare string",
    [1, "two", None],
]


def test_the_shared_encoder_writes_exactly_what_json_dumps_writes():
    from mailsec.core.events import _compact, _compact_ascii

    for value in ODD_VALUES:
        for encode, ascii_only in ((_compact, False), (_compact_ascii, True)):
            expected = json.dumps(
                value, ensure_ascii=ascii_only, separators=(",", ":"), default=str
            )
            assert encode(value) == expected


def test_the_shared_encoder_is_safe_to_share_between_threads():
    from concurrent.futures import ThreadPoolExecutor

    from mailsec.core.events import _compact

    shared = ["shared", {"deep": list(range(50))}]
    values = [{"n": n, "shared": shared, "again": shared} for n in range(2000)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(_compact, values))
    assert got == [json.dumps(v, separators=(",", ":")) for v in values]


def test_to_json_is_the_compact_json_of_the_data_with_xml_unsafe_text_ascii_escaped():
    for fields in ODD_VALUES[:5]:
        fields = {str(k): v for k, v in fields.items()}
        event = build_event("s", 0, fields, ("k",))
        compact = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"), default=str)
        if any(c in compact for c in "\ud800\uffff"):
            expected = json.dumps(event.data, separators=(",", ":"), default=str)
        else:
            expected = compact
        assert event.to_json() == expected


def test_event_id_maker_gives_the_ids_event_id_gives():
    from mailsec.core.events import event_id_maker

    for head, tail, revision in [
        (("my-org", "prod", "1539105912220"), (1, "198.18.0.1"), None),
        (("ørg", "é"), ("São Paulo", 2.5, None), 7),
        ((), ("only", "tail"), "r1"),
        (("only", "head"), (), None),
        ((), (), {"rev": [1, 2]}),
    ]:
        make = event_id_maker("apigee:sense:bot", head, revision)
        assert make(*tail) == event_id("apigee:sense:bot", (*head, *tail), revision)
        assert make(*tail) == make(*tail)  # the shared start of the hash is not consumed


def test_encoded_events_are_the_events_encoded_event_makes_one_by_one():
    from mailsec.core.events import encoded_event, encoded_events

    texts = ['{"time":"t","n":1}', '{"time":"t","n":2}', '{"time":"t","u":"São"}']
    for placement in ({}, {"index": "i", "source": "s", "host": "h"}, {"source": "s"}):
        many = encoded_events(1.5, "st", iter(texts), **placement)
        one_by_one = [encoded_event(1.5, "st", text, **placement) for text in texts]
        assert many == one_by_one
        assert [repr(e) for e in many] == [repr(e) for e in one_by_one]
        assert [e.to_json() for e in many] == texts
    with pytest.raises(AttributeError):
        many[0].time = 2.0  # as immutable as any other event
    assert encoded_events(1.5, "st", []) == []


def test_xml_safe_json_is_what_encoding_with_ensure_ascii_gives():
    from mailsec.core.events import _compact, _compact_ascii, xml_safe_json

    for value in [*ODD_VALUES, {"astral": "🤖\U0010ffff", "é": "\ud800\udfff\ufffe"}]:
        text = _compact(value)
        unsafe = any(c in text for c in "\ud800\udfff\ufffe\uffff")
        assert xml_safe_json(text) == (_compact_ascii(value) if unsafe else text)


def test_an_encoded_event_is_written_as_given_and_reads_as_its_fields():
    from mailsec.core.events import EncodedFields, _compact, encoded_event

    fields = {"time": "2024-01-02T00:00:00.000000Z", "u": "São", "sur": "x\ud800", "n": [1, None]}
    event = encoded_event(1704153600.0, "s", _compact(fields), source="src")
    reference = Event(1704153600.0, "s", fields, source="src")
    assert isinstance(event.data, EncodedFields)
    assert event.json_text() == reference.json_text() == _compact(fields)
    assert event.to_json() == reference.to_json()
    assert "\\ud800" in event.to_json()  # the XML-safety check applies to it too
    assert event == reference and event.data == fields and dict(event.data) == fields
    assert event.data["u"] == "São" and list(event.data) == list(fields) and len(event.data) == 4


def test_event_ids_of_keys_with_lone_surrogates():
    from mailsec.core.events import event_id_maker

    plain = event_id("s", ["a", "b"])
    assert plain == event_id("s", ["a", "b"])  # ids of ordinary text are unchanged
    odd = event_id("s", ["a\ud800", "b"])
    assert len(odd) == 32 and odd != plain
    assert event_id_maker("s", ["a\ud800"])("b") == odd
