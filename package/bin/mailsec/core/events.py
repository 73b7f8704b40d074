"""Events as the add-on writes them: one JSON object per event with an explicit time.

The first key of every event is `time` (canonical ISO 8601 UTC) so that props.conf
can extract it the same way whether the event arrives through a modular input or is
re-ingested by other means; the modular input also passes the epoch time explicitly.
`event_id` is a hash of the event's natural key and revision: a unit re-emitted after
a crash carries the same id and `dedup event_id` removes it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from json.encoder import c_make_encoder, encode_basestring, encode_basestring_ascii
from typing import Any, Callable, Optional, Protocol

from mailsec.core.timeutil import Instant, iso_z, to_epoch

# Characters that cannot travel in splunkd's XML event stream (lone surrogates from
# vendor "\ud800" escapes, non-characters); an event holding one is written ASCII-escaped.
_NOT_XML_SAFE = re.compile("[\ud800-\udfff\ufffe\uffff]")


def _compact_encoder(ensure_ascii: bool) -> Callable[[Any], str]:
    """json.dumps(value, ensure_ascii=..., separators=(",", ":"), default=str), faster.

    json.dumps, and JSONEncoder.encode too, build a new C encoder on every call:
    about half the cost of encoding one small event, paid per event (300 per Sense
    report). The C encoder is built once here. Without a circular-reference
    registry (`markers=None`) it keeps no state between calls, so threads can
    share it; events are plain trees, never circular. Where CPython's C
    accelerator is absent, the standard encoder is used.
    """
    string = encode_basestring_ascii if ensure_ascii else encode_basestring
    if c_make_encoder is not None:
        encoder = c_make_encoder(None, str, string, None, ":", ",", False, False, True)
        return lambda value: "".join(encoder(value, 0))
    standard = json.JSONEncoder(ensure_ascii=ensure_ascii, separators=(",", ":"), default=str)
    return standard.encode


_compact = _compact_encoder(ensure_ascii=False)
_compact_ascii = _compact_encoder(ensure_ascii=True)

# json's own escaping of a string value (C where available): what `_compact` writes
# for a str, for services that build an event's JSON text from a template.
json_string = encode_basestring


def _ascii_escape_char(match: re.Match) -> str:
    # as json's ensure_ascii: \uXXXX in lower case, astral characters as a surrogate pair
    code = ord(match.group())
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


_NON_ASCII = re.compile("[^\x00-\x7f]")


def xml_safe_json(text: str) -> str:
    """A compact JSON text as splunkd's XML event stream can carry it.

    Characters XML cannot hold (lone surrogates from vendor "\\ud800" escapes,
    non-characters) make the whole event ASCII-escaped: the same text as encoding
    its fields with ensure_ascii=True, since json escapes only inside strings and
    escapes every non-ASCII character the same way wherever it stands.
    """
    # isascii() is a flag lookup; the search scans every character
    if text.isascii() or not _NOT_XML_SAFE.search(text):
        return text
    return _NON_ASCII.sub(_ascii_escape_char, text)


def has_xml_unsafe(text: str) -> bool:
    """Whether some event in `text` (one or many JSON texts) needs `xml_safe_json`."""
    return not text.isascii() and _NOT_XML_SAFE.search(text) is not None


class EncodedFields(Mapping):
    """An event's fields held as the JSON text they are written as, parsed on first read.

    A service producing many events of one shape (300 bots per Sense report) builds
    each event's text directly; nothing on the way to splunkd reads the fields, so
    they are parsed only if someone asks (tests, a caller's inspection).
    """

    __slots__ = ("_fields", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._fields: Optional[dict] = None

    def _parsed(self) -> dict:
        if self._fields is None:
            self._fields = json.loads(self.text)
        return self._fields

    def __getitem__(self, key: str) -> Any:
        return self._parsed()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parsed())

    def __len__(self) -> int:
        return len(self._parsed())

    def __repr__(self) -> str:
        return f"EncodedFields({self.text!r})"


class Event:
    """One event, immutable. A plain class rather than a dataclass: importing
    `dataclasses` (with `inspect`) costs a per-process start-up time the alert
    action, a new process per mail, cannot afford."""

    __slots__ = ("data", "host", "index", "source", "sourcetype", "time")
    _FIELDS = ("time", "sourcetype", "data", "index", "source", "host")

    def __init__(
        self,
        time: float,
        sourcetype: str,
        data: Mapping[str, Any],
        index: Optional[str] = None,
        source: Optional[str] = None,
        host: Optional[str] = None,
    ) -> None:
        # as a frozen dataclass's generated __init__ does
        setattr_ = object.__setattr__
        setattr_(self, "time", time)
        setattr_(self, "sourcetype", sourcetype)
        setattr_(self, "data", data)
        setattr_(self, "index", index)
        setattr_(self, "source", source)
        setattr_(self, "host", host)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: an Event is immutable")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._FIELDS)

    __hash__ = None  # type: ignore[assignment]  # data is a mapping

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._FIELDS)
        return f"Event({fields})"

    def json_text(self) -> str:
        """The fields as compact JSON, before the XML-safety check of `to_json`."""
        data = self.data
        if type(data) is EncodedFields:
            return data.text
        return _compact(data)

    def to_json(self) -> str:
        return xml_safe_json(self.json_text())

    @property
    def event_id(self) -> str:
        return self.data["event_id"]


def encoded_event(
    time: float,
    sourcetype: str,
    json_text: str,
    *,
    index: Optional[str] = None,
    source: Optional[str] = None,
    host: Optional[str] = None,
) -> Event:
    """An event whose fields are given as their compact JSON text (as `_compact`
    writes it: first key "time", no whitespace, non-ASCII unescaped), written as is."""
    return Event(time, sourcetype, EncodedFields(json_text), index, source, host)


# Each slot's own setter: what object.__setattr__ finds and calls, found once here.
_new_event = object.__new__
_set_time, _set_sourcetype, _set_data, _set_index, _set_source, _set_host = (
    Event.__dict__[name].__set__
    for name in ("time", "sourcetype", "data", "index", "source", "host")
)


def encoded_events(
    time: float,
    sourcetype: str,
    json_texts: Iterable[str],
    *,
    index: Optional[str] = None,
    source: Optional[str] = None,
    host: Optional[str] = None,
) -> list:
    """`[encoded_event(time, sourcetype, text, ...) for text in json_texts]`, for
    many events sharing time and target (300 bots per Sense report): each event's
    slots are set directly, which halves the cost of building it."""
    events = []
    append = events.append
    for text in json_texts:
        event = _new_event(Event)
        _set_time(event, time)
        _set_sourcetype(event, sourcetype)
        _set_data(event, EncodedFields(text))
        _set_index(event, index)
        _set_source(event, source)
        _set_host(event, host)
        append(event)
    return events


def event_id(sourcetype: str, natural_key: Sequence[Any], revision: Any = None) -> str:
    material = _compact([sourcetype, list(natural_key), revision])
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class _IdMaker:
    """`make(*key_tail)` == `event_id(sourcetype, (*key_head, *key_tail), revision)`.

    For many events sharing the start of their natural key (the 300 bots of one
    Sense report share org, env and messageId): the shared part of the hashed
    material is encoded once, and so is the start of the hash itself.
    """

    def __init__(self, sourcetype: str, key_head: Sequence[Any], revision: Any) -> None:
        self._whole = (sourcetype, tuple(key_head), revision)
        head = _compact([sourcetype, list(key_head)])[:-2]  # '["st",["a","b"' or '["st",['
        self._joiner = "," if key_head else ""
        self._tail = "]," + _compact(revision) + "]"
        self._hashed_head = hashlib.sha256(head.encode("utf-8", "surrogatepass"))

    def __call__(self, *key_tail: Any) -> str:
        if not key_tail:
            return event_id(*self._whole)
        return self.from_json(_compact(key_tail)[1:-1])

    def from_json(self, key_tail_json: str) -> str:
        """The id from the key's tail already encoded: its values as `_compact`
        writes them, comma-separated (for a caller that has them escaped anyway)."""
        digest = self._hashed_head.copy()
        digest.update((self._joiner + key_tail_json + self._tail).encode("utf-8", "surrogatepass"))
        return digest.hexdigest()[:32]


def event_id_maker(sourcetype: str, key_head: Sequence[Any], revision: Any = None) -> _IdMaker:
    """`make(*key_tail)` == `event_id(sourcetype, (*key_head, *key_tail), revision)`,
    faster when many ids share `key_head` (see `_IdMaker`)."""
    return _IdMaker(sourcetype, key_head, revision)


def build_event(
    sourcetype: str,
    when: Instant,
    fields: Mapping[str, Any],
    natural_key: Sequence[Any],
    *,
    revision: Any = None,
    index: Optional[str] = None,
    source: Optional[str] = None,
    host: Optional[str] = None,
) -> Event:
    data = {"time": iso_z(when)}
    data.update(fields)
    data["event_id"] = event_id(sourcetype, natural_key, revision)
    return Event(
        time=round(to_epoch(when), 6),
        sourcetype=sourcetype,
        data=data,
        index=index,
        source=source,
        host=host,
    )


class EventSink(Protocol):
    """Where a service writes events.

    `write` returns only when the events are written and flushed, so a checkpoint
    saved after it covers only what is durable (at-least-once).
    """

    def write(self, events: Iterable[Event]) -> int: ...


class ListSink:
    """An in-memory sink for service-level tests and benchmarks."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def write(self, events: Iterable[Event]) -> int:
        batch = list(events)
        self.events.extend(batch)
        return len(batch)
