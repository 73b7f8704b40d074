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
from collections.abc import Iterable, Mapping, Sequence
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

    def to_json(self) -> str:
        text = _compact(self.data)
        # isascii() is a flag lookup; the search scans every character (~3 us an event)
        if not text.isascii() and _NOT_XML_SAFE.search(text):
            # control characters are already \u-escaped by json; these are not
            text = _compact_ascii(self.data)
        return text

    @property
    def event_id(self) -> str:
        return self.data["event_id"]


def event_id(sourcetype: str, natural_key: Sequence[Any], revision: Any = None) -> str:
    material = _compact([sourcetype, list(natural_key), revision])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


def event_id_maker(
    sourcetype: str, key_head: Sequence[Any], revision: Any = None
) -> Callable[..., str]:
    """`make(*key_tail)` == `event_id(sourcetype, (*key_head, *key_tail), revision)`.

    For many events sharing the start of their natural key (the 300 bots of one
    Sense report share org, env and messageId): the shared part of the hashed
    material is encoded once, and so is the start of the hash itself.
    """
    head = _compact([sourcetype, list(key_head)])[:-2]  # '["st",["a","b"' or '["st",['
    tail = "]," + _compact(revision) + "]"
    joiner = "," if key_head else ""
    hashed_head = hashlib.sha256(head.encode("utf-8"))

    def make(*key_tail: Any) -> str:
        if not key_tail:
            return event_id(sourcetype, key_head, revision)
        digest = hashed_head.copy()
        digest.update((joiner + _compact(key_tail)[1:-1] + tail).encode("utf-8"))
        return digest.hexdigest()[:32]

    return make


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
