"""From the current SER reporting API's answers to `ser_usage` events (docs/ser_usage.md).

Rows are read leniently: a counter sent as a string, missing (0) or renamed (read
under each name Proofpoint's own client knows, such as `blockedMessage` for
`blockedMessages`) never stops the input; a field we do not know is kept under its
snake_case name. Paging metadata comes in two forms, `metadata.pagination`
{`currentPage`, `itemsPerPage`, `totalItemCount`, `totalPages`} and
`metadata.totalCount`; both are read, only to report a count that disagrees with
the pages: a page shorter than asked, or empty, ends every report.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from mailsec.core.events import Event, build_event
from mailsec.core.timeutil import iso_z
from mailsec.ser.values import digest, finite_or_null, lenient_number

RELAY_USAGE = "relay_usage"
RELAY_FAILURES = "relay_failures"
DELIVERY_FAILURES = "delivery_failures"
OVERVIEW = "overview"
SOURCETYPES = {
    RELAY_USAGE: "proofpoint:ser:relay_usage",
    RELAY_FAILURES: "proofpoint:ser:relay_failures",
    DELIVERY_FAILURES: "proofpoint:ser:delivery_failure",
    OVERVIEW: "proofpoint:ser:overview",
}

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake_case(name: str) -> str:
    return _CAMEL.sub("_", name).replace("-", "_").replace(" ", "_").lower()


def _named(*vendor_names: str) -> tuple:
    """(event field, (vendor name,)) for vendor names whose snake_case is the field."""
    return tuple((snake_case(name), (name,)) for name in vendor_names)


# (event field, vendor names in the order they are tried)
IDENTITY = (("relay_user_id", ("relayUserId", "relay_user_id")), ("name", ("name",)))
USAGE_COUNTERS = (
    # `requestedMessages` (docs/ser_usage.md) is `totalMessages` in Proofpoint's client
    ("requested_messages", ("requestedMessages", "totalMessages")),
    *_named("acceptedMessages", "sentMessages", "deliveredMessages", "undeliveredMessages"),
    *_named("rejectedMessages"),
    ("blocked_messages", ("blockedMessages", "blockedMessage")),
    *_named("quarantinedMessages", "requestedThroughput", "acceptedThroughput"),
    *_named("sentThroughput", "avgAcceptedMessageSize"),
)
FAILURE_COUNTERS = _named(
    "totalRequestedMessages",
    "totalFailedMessages",
    "totalFailureRate",
    "policyViolationMessages",
    "filteredMessages",
    "deliveryFailureMessages",
    "quarantinedMessages",
)
FAILURE_TEXTS = _named("lastFailedDate")
DOMAIN_TEXTS = (*_named("domain"), ("dsn_code", ("dsnCode", "dsn_code")), *_named("details"))
DOMAIN_COUNTERS = _named("count")
OVERVIEW_FIELDS = (
    *_named("throughputLimit", "averageDailyThroughput", "throughputForecast"),
    *_named("remainingThroughput", "acceptedThroughput"),
    ("average_7_day_throughput", ("average7DayThroughput",)),
    ("average_30_day_throughput", ("average30DayThroughput",)),
    *_named("licenseDaysRemaining"),
)
OVERVIEW_TEXTS = _named(
    "licenseStartDate",
    "licenseEndDate",
    "deploymentType",
    "throughputForecastStatus",
    "lastUpdated",
)
# Our own fields win over a vendor field of the same name.
_RESERVED = {"time", "account", "day", "revision", "final", "event_id", "api_version"}


@dataclass
class Rows:
    """One report's rows for one day, keyed by their natural key."""

    records: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)
    # relay users whose delivery failures by domain must be read: they have some, or
    # their failures row does not say (the counter missing under every name)
    with_delivery_failures: list = field(default_factory=list)

    def digest(self) -> str:
        return digest(sorted(self.records.items(), key=lambda item: str(item[0])))


def _first(row: Mapping, names: Sequence[str]) -> tuple[Optional[str], Any]:
    for name in names:
        if name in row:
            return name, row[name]
    return None, None


def read_row(
    row: Mapping,
    counters: Iterable[tuple],
    texts: Iterable[tuple],
    where: str,
    problems: list,
) -> dict:
    """A vendor row as event fields: known counters as numbers (0 when missing),
    known texts as strings, every other field kept under its snake_case name (NaN
    and infinities in it as null)."""
    record: dict[str, Any] = {}
    used = set()
    for name, vendor_names in texts:
        key, value = _first(row, vendor_names)
        used.add(key)
        record[name] = "" if value is None else str(value)
    for name, vendor_names in counters:
        key, value = _first(row, vendor_names)
        used.add(key)
        record[name] = lenient_number(value, f"{where}.{key or vendor_names[0]}", problems)
    for key, value in row.items():
        if key in used:
            continue
        name = snake_case(str(key))
        if name in record or name in _RESERVED:
            name = f"vendor_{name}"
        record[name] = finite_or_null(value, f"{where}.{key}", problems)
    return record


def answer_rows(answer: Any, where: str, problems: list) -> list:
    """The `data` rows of an answer (a single object is one row; anything else none)."""
    if not isinstance(answer, Mapping):
        problems.append(f"{where}: the answer is a {type(answer).__name__}, not an object")
        return []
    data = answer.get("data")
    if data is None:
        return []
    if isinstance(data, Mapping):
        return [data]
    if not isinstance(data, list):
        problems.append(f"{where}: data is a {type(data).__name__}, not a list")
        return []
    return data


def _objects(page: list, where: str, problems: list) -> Iterator[tuple[str, Mapping]]:
    """(where, row) for each row of a page that is an object; any other is skipped."""
    for position, row in enumerate(page):
        at = f"{where}.data[{position}]"
        if isinstance(row, Mapping):
            yield at, row
        else:
            problems.append(f"{at} is not an object; skipped")


def total_pages(answer: Any, page_size: int) -> Optional[int]:
    """The number of pages from either metadata form; None when there is neither."""
    metadata = answer.get("metadata") if isinstance(answer, Mapping) else None
    if not isinstance(metadata, Mapping):
        return None
    pagination = metadata.get("pagination")
    if isinstance(pagination, Mapping):
        pages = lenient_number(pagination.get("totalPages"), "totalPages", [])
        if pages or "totalPages" in pagination:
            return int(pages)
        items = lenient_number(pagination.get("totalItemCount"), "totalItemCount", [])
        per_page = lenient_number(pagination.get("itemsPerPage"), "itemsPerPage", []) or page_size
        if "totalItemCount" not in pagination:
            return None
        pages = items / per_page  # infinite for an itemsPerPage of 1e-320
        return math.ceil(pages) if math.isfinite(pages) else None
    if "totalCount" in metadata:
        count = lenient_number(metadata.get("totalCount"), "totalCount", [])
        return math.ceil(count / page_size)
    return None


def add_relay_rows(rows: Rows, answer: Any, report: str, where: str) -> int:
    """Add a page of relay-user rows (usage or failures); returns the rows it held."""
    counters = USAGE_COUNTERS if report == RELAY_USAGE else FAILURE_COUNTERS
    texts = () if report == RELAY_USAGE else FAILURE_TEXTS
    page = answer_rows(answer, where, rows.problems)
    for at, row in _objects(page, where, rows.problems):
        record = read_row(row, counters, IDENTITY + texts, at, rows.problems)
        key = record["relay_user_id"]
        if not key:
            rows.problems.append(f"{at} has no relayUserId; skipped")
            continue
        if key in rows.records:
            # pages of a report whose order shifted between requests: the row is
            # counted once
            rows.problems.append(f"{at} repeats relayUserId {key!r}; the first kept")
            continue
        rows.records[key] = record
        if report == RELAY_FAILURES and (
            record["delivery_failure_messages"]
            or _first(row, dict(FAILURE_COUNTERS)["delivery_failure_messages"])[0] is None
        ):
            rows.with_delivery_failures.append(record)
    return len(page)


def add_domain_rows(rows: Rows, answer: Any, relay_user: Mapping, where: str) -> int:
    page = answer_rows(answer, where, rows.problems)
    for at, row in _objects(page, where, rows.problems):
        record = {"relay_user_id": relay_user["relay_user_id"], "name": relay_user["name"]}
        record.update(read_row(row, DOMAIN_COUNTERS, DOMAIN_TEXTS, at, rows.problems))
        record["dsn_class"] = dsn_class(record["dsn_code"])
        key = (record["relay_user_id"], record["domain"], record["dsn_code"])
        if key in rows.records:
            rows.problems.append(f"{at} repeats domain and DSN code {key[1:]}; the first kept")
            continue
        rows.records[key] = record
    return len(page)


def dsn_class(code: str) -> str:
    """`5.1.1` -> `5.X.X`, as the ser_report events name DSN classes."""
    head = code.strip()[:1]
    return f"{head}.X.X" if head in ("2", "3", "4", "5") else "unknown"


def day_events(
    report: str,
    account: str,
    day_start: int,
    revision: int,
    final: bool,
    rows: Rows,
    index: Optional[str] = None,
) -> list[Event]:
    sourcetype = SOURCETYPES[report]
    day = iso_z(day_start)[:10]
    events = []
    for key, record in sorted(rows.records.items(), key=lambda item: str(item[0])):
        fields: dict[str, Any] = {"account": account, "day": day}
        fields.update(record)
        fields["revision"] = revision
        fields["final"] = final
        natural_key = [account, day, *(key if isinstance(key, tuple) else (key,))]
        events.append(
            build_event(sourcetype, day_start, fields, natural_key, revision=revision, index=index)
        )
    return events


def overview_event(
    account: str, api_version: str, answer: Any, when: float, index: Optional[str] = None
) -> tuple[Event, str, list]:
    """The overview event, the marker of its content (lastUpdated, or a digest of the
    figures where v1 has no lastUpdated), and the problems met."""
    problems: list = []
    data = answer.get("data") if isinstance(answer, Mapping) else None
    if not isinstance(data, Mapping):
        problems.append("overview: the answer holds no data object")
        data = {}
    record = read_row(data, OVERVIEW_FIELDS, OVERVIEW_TEXTS, "overview.data", problems)
    if api_version == "v1":
        for name in ("license_days_remaining", "deployment_type", "throughput_forecast_status"):
            record.pop(name, None)
        record.pop("last_updated", None)
    limit = record["throughput_limit"]
    record["used_percent"] = (
        round(100.0 * record["accepted_throughput"] / limit, 4) if limit else None
    )
    record["forecast_percent"] = (
        round(100.0 * record["throughput_forecast"] / limit, 4) if limit else None
    )
    marker = record.get("last_updated") or digest(dict(data))
    day = iso_z(when)[:10]
    fields: dict[str, Any] = {"account": account, "day": day, "api_version": api_version}
    fields.update(record)
    event = build_event(SOURCETYPES[OVERVIEW], when, fields, [account, day, marker], index=index)
    return event, marker, problems
