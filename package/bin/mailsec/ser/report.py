"""From a summary answer to events.

Each `applicationUsers` entry becomes one flat record: the four identity fields,
the status counts, the sizes and the DSN classes under the snake_case names of
docs/ser_report.md.
A missing count is 0; a field SER adds that we do not know is kept (nested ones
under `<block>_<name>`), so a vendor change never loses data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from mailsec.core.events import Event, build_event
from mailsec.core.timeutil import as_utc, iso_z, parse_iso8601
from mailsec.ser.values import digest, finite_or_null
from mailsec.ser.values import lenient_number as _count

SUMMARY_SOURCETYPE = "proofpoint:ser:summary"
ENTITLEMENT_SOURCETYPE = "proofpoint:ser:entitlement"

IDENTITY = (
    ("applicationName", "application_name"),
    ("applicationUserName", "application_user_name"),
    ("fromEnvelope", "from_envelope"),
    ("fromHeader", "from_header"),
)
STATUS = (
    ("success", "success"),
    ("failure", "failure"),
    ("tempFailure", "temp_failure"),
    ("partialSuccess", "partial_success"),
    ("inProgress", "in_progress"),
    ("total", "total"),
    ("recipientsTotal", "recipients_total"),
)
SIZES = (
    ("messageSizeTotal", "message_size_total"),
    ("deliveredSizeTotal", "delivered_size_total"),
)
DETAILS = (
    ("2.X.X", "dsn_2xx"),
    ("3.X.X", "dsn_3xx"),
    ("4.X.X", "dsn_4xx"),
    ("5.X.X", "dsn_5xx"),
)
COUNT_FIELDS = tuple(name for _, name in STATUS + SIZES + DETAILS)
IDENTITY_FIELDS = tuple(name for _, name in IDENTITY)
_KNOWN_USER_KEYS = {key for key, _ in IDENTITY + SIZES} | {"status", "details"}
# Our own fields win over a vendor field of the same name.
_RESERVED = {"time", "account", "window_start", "window_end", "revision", "final", "event_id"}
_RESERVED |= set(COUNT_FIELDS) | set(IDENTITY_FIELDS)


@dataclass
class Summary:
    users: list[dict] = field(default_factory=list)
    entitlement: Optional[dict] = None
    problems: list[str] = field(default_factory=list)

    @property
    def message_size_total(self) -> int:
        return sum(user["message_size_total"] for user in self.users)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _block(entry: Mapping, name: str, problems: list[str], where: str) -> Mapping:
    block = entry.get(name)
    if block is None:
        return {}
    if not isinstance(block, Mapping):
        problems.append(f"{where}.{name} is not an object; its counts taken as 0")
        return {}
    return block


def flatten_user(entry: Mapping, problems: list[str], where: str = "applicationUsers") -> dict:
    record: dict[str, Any] = {name: _text(entry.get(key)) for key, name in IDENTITY}
    status = _block(entry, "status", problems, where)
    details = _block(entry, "details", problems, where)
    for key, name in STATUS:
        record[name] = _count(status.get(key), f"{where}.status.{key}", problems)
    for key, name in SIZES:
        record[name] = _count(entry.get(key), f"{where}.{key}", problems)
    for key, name in DETAILS:
        record[name] = _count(details.get(key), f"{where}.details.{key}", problems)
    known_status = {key for key, _ in STATUS}
    known_details = {key for key, _ in DETAILS}
    extras = {f"status_{k}": v for k, v in status.items() if k not in known_status}
    extras.update({f"details_{k}": v for k, v in details.items() if k not in known_details})
    extras.update({k: v for k, v in entry.items() if k not in _KNOWN_USER_KEYS})
    for key, value in extras.items():
        name = key if key not in _RESERVED else f"vendor_{key}"
        record[name] = finite_or_null(value, f"{where}.{key}", problems)
    return record


def _merge(into: dict, other: dict) -> None:
    for name in COUNT_FIELDS:
        into[name] += other[name]


def parse_summary(answer: Any) -> Summary:
    """Read a decoded answer; bad entries are reported in `problems` and skipped."""
    summary = Summary()
    if not isinstance(answer, Mapping):
        summary.problems.append(f"the answer is a {type(answer).__name__}, not an object")
        return summary
    users = answer.get("applicationUsers") or []
    if not isinstance(users, list):
        summary.problems.append("applicationUsers is not a list; no user read")
        users = []
    by_identity: dict[tuple, dict] = {}
    for position, entry in enumerate(users):
        where = f"applicationUsers[{position}]"
        if not isinstance(entry, Mapping):
            summary.problems.append(f"{where} is not an object; skipped")
            continue
        record = flatten_user(entry, summary.problems, where)
        identity = tuple(record[name] for name in IDENTITY_FIELDS)
        if identity in by_identity:
            # one event per user per window: a repeated identity is added up
            summary.problems.append(f"{where} repeats identity {identity}; counts added up")
            _merge(by_identity[identity], record)
        else:
            by_identity[identity] = record
    summary.users = list(by_identity.values())
    entitlement = answer.get("entitlement")
    if isinstance(entitlement, Mapping):
        summary.entitlement = dict(entitlement)
    elif entitlement is not None:
        summary.problems.append("entitlement is not an object; ignored")
    return summary


def window_digest(users: Iterable[Mapping]) -> str:
    """Stands for a window's content: equal digests mean no count changed."""
    return digest(sorted(json.dumps(u, sort_keys=True, default=str) for u in users))


def summary_events(
    account: str,
    window_start: int,
    window_end: int,
    revision: int,
    final: bool,
    users: Iterable[Mapping],
    index: Optional[str] = None,
) -> list[Event]:
    start_iso, end_iso = iso_z(window_start), iso_z(window_end)
    events = []
    for user in users:
        fields: dict[str, Any] = {
            "account": account,
            "window_start": start_iso,
            "window_end": end_iso,
            "revision": revision,
            "final": final,
        }
        fields.update(user)
        natural_key = [account, start_iso, end_iso] + [user[n] for n in IDENTITY_FIELDS]
        events.append(
            build_event(
                SUMMARY_SOURCETYPE,
                window_start,
                fields,
                natural_key,
                revision=revision,
                index=index,
            )
        )
    return events


def _iso_or_raw(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return iso_z(parse_iso8601(value))
    except ValueError:
        return value


def entitlement_event(
    account: str,
    entitlement: Mapping[str, Any],
    used_bytes: int,
    used_until: int,
    when: float,
    index: Optional[str] = None,
) -> Event:
    fields: dict[str, Any] = {"account": account}
    for key, value in entitlement.items():
        name = key if key not in ("account", "time", "event_id") else f"vendor_{key}"
        fields[name] = finite_or_null(value, key, [])
    fields["license_start"] = _iso_or_raw(entitlement.get("license_start"))
    fields["license_end"] = _iso_or_raw(entitlement.get("license_end"))
    annual = _count(entitlement.get("annual_throughput"), "annual_throughput", [])
    fields["annual_throughput"] = annual
    fields["used_bytes"] = used_bytes
    fields["used_percent"] = round(100.0 * used_bytes / annual, 4) if annual else None
    fields["used_until"] = iso_z(used_until)
    day = as_utc(when).strftime("%Y-%m-%d")
    natural_key = [account, day, digest(dict(entitlement)), fields["used_until"]]
    return build_event(ENTITLEMENT_SOURCETYPE, when, fields, natural_key, index=index)
