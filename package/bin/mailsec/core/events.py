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
from dataclasses import dataclass
from typing import Any, Optional, Protocol

from mailsec.core.timeutil import Instant, iso_z, to_epoch

# Characters that cannot travel in splunkd's XML event stream (lone surrogates from
# vendor "\ud800" escapes, non-characters); an event holding one is written ASCII-escaped.
_NOT_XML_SAFE = re.compile("[\ud800-\udfff\ufffe\uffff]")
# One encoder each, not one per call: json.dumps with options builds a new encoder
# every time, a cost paid per event (300 per Sense report).
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
_COMPACT_ASCII = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Event:
    time: float
    sourcetype: str
    data: Mapping[str, Any]
    index: Optional[str] = None
    source: Optional[str] = None
    host: Optional[str] = None

    def to_json(self) -> str:
        text = _COMPACT.encode(self.data)
        if _NOT_XML_SAFE.search(text):
            # control characters are already \u-escaped by json; these are not
            text = _COMPACT_ASCII.encode(self.data)
        return text

    @property
    def event_id(self) -> str:
        return self.data["event_id"]


def event_id(sourcetype: str, natural_key: Sequence[Any], revision: Any = None) -> str:
    material = _COMPACT.encode([sourcetype, list(natural_key), revision])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


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
