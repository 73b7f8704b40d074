"""A simulator of Proofpoint SER's current reporting API (`reporting.ser.proofpoint.com`).

It is `ser.simulator.SerSimulator` with more paths: the same token endpoint, bearer
tokens (401 when unknown or expired), rolling per-minute limit (429 with or without
Retry-After), injected failures (5xx bursts, 400, 403, ...) and request log.

Facts, from Proofpoint's community client `pfptcommunity/ser-admin-api-python`
(v0.3.0, commit 92d777c, July 2026), file by file:
- `client.py`: reporting base URL `https://reporting.ser.proofpoint.com`, token URL
  `https://auth.proofpoint.com/v1/token`, client credentials posted as form fields
  (`ClientSecretPost`): the same token endpoint, key and secret as `ser_report`.
- `reporting/usage/resources.py`: `GET /v1/usage/overview`, `GET /v2/usage/overview`
  (no parameters), `GET /v1/usage/traffic-summary`, `POST /v1/usage/relay-users`
  (paged with `SERPagination`).
- `reporting/usage/responses.py`: the overview under `data`; the traffic summary's
  figures at the top level of the answer (`UsageTrafficSummary(self)`), not under `data`.
- `reporting/usage/models.py`: `UsageOverview` {`throughputLimit`,
  `averageDailyThroughput`, `throughputForecast`, `remainingThroughput`,
  `acceptedThroughput`, `licenseStartDate`, `licenseEndDate`, `average7DayThroughput`,
  `average30DayThroughput`}; `UsageOverviewV2` adds `deploymentType`,
  `licenseDaysRemaining`, `throughputForecastStatus`, `lastUpdated`. Throughput values
  are read as strings (`_string_value`): they are sent here as strings. `UsageMetrics`
  counters `acceptedMessages`, `blockedMessages` (read also as `blockedMessage`: the
  field is named both ways), `deliveredMessages`, `quarantinedMessages`,
  `rejectedMessages`, `sentMessages`, `totalMessages`, `undeliveredMessages`,
  throughput `requestedThroughput`, `acceptedThroughput`, `sentThroughput`,
  `avgAcceptedMessageSize`; relay rows add `relayUserId` and `name`. The traffic
  summary adds `startDate`, `endDate`, `unauthorizedSenderMessages`,
  `messagingLimitsMessages`, `suppressedMessages`, `filteredMessages`,
  `deliveryFailureMessages`.
- `reporting/usage/requests.py` (`UsageMetricsRequest`) and
  `reporting/failures/relay_users.py` (`FailureRelayUsersRequest`): JSON bodies with
  `dates` {`gte`, `lte`} (`common/encoding.py`: dates as ISO `YYYY-MM-DD`),
  `pageNum`, `pageSize`, `orderBy`, `orderDir` (`asc`/`desc`, `common/enums.py`); the
  traffic summary takes `dates[gte]`/`dates[lte]` as query parameters.
- `reporting/failures/relay_users.py`: `POST /v1/failures/relay-users`, rows
  `relayUserId`, `name`, `totalRequestedMessages`, `totalFailedMessages`,
  `totalFailureRate`, `policyViolationMessages`, `filteredMessages`,
  `deliveryFailureMessages`, `quarantinedMessages`, `lastFailedDate`.
- `reporting/failures/delivery_failures/{resources,models,requests}.py`:
  `POST /v1/failures/relay-users/{relayUserId}/delivery-failures/domain`, rows
  `domain`, `dsnCode`, `details`, `count`, sortable by `dsnCode` or `count`; paged with
  `SERTotalCountPagination` (`metadata.totalCount`, with `metadata.dsnCodes` and
  `metadata.domains`), where the relay-user reports use `SERPagination`
  (`metadata.pagination` {`currentPage`, `itemsPerPage`, `totalItemCount`,
  `totalPages`}): the two metadata forms.
- `README.md` "Pagination": pages are numbered from 1; `common/models.py`: "endpoint
  models try alternate API field names when the docs vary".
Not published (so chosen here, and each a knob): rate limits, error bodies
(`{"message": ...}` as `ser_report`'s API), the 400 on a malformed date.

Data: messages are generated per relay user and UTC day (seeded), so every figure of
every report is the exact sum of its messages at the simulator's clock. Deferred
messages resolve to delivered or undelivered up to `resolve_within` after they were
received: a recent day's counts change for a few days, then never again.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Optional
from urllib.parse import unquote

from ser.simulator import DAY, TOKEN_PATH, SerSimulator

OVERVIEW_V1 = "/v1/usage/overview"
OVERVIEW_V2 = "/v2/usage/overview"
TRAFFIC_SUMMARY = "/v1/usage/traffic-summary"
RELAY_USAGE = "/v1/usage/relay-users"
RELAY_FAILURES = "/v1/failures/relay-users"
DOMAIN_RE = re.compile(r"^/v1/failures/relay-users/([^/]+)/delivery-failures/domain$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DATA_PATHS = (OVERVIEW_V1, OVERVIEW_V2, TRAFFIC_SUMMARY, RELAY_USAGE, RELAY_FAILURES)

DOMAINS = ("gmail.com", "outlook.com", "example.org", "yahoo.co.jp", "acme.test")
DSN_DETAILS = {
    "5.1.1": "550 5.1.1 The email account that you tried to reach does not exist",
    "5.2.2": "552 5.2.2 Mailbox full",
    "5.7.1": "550 5.7.1 Message rejected as spam",
    "4.4.7": "Message expired: delivery attempts exhausted",
}
KINDS = ("delivered", "undelivered", "rejected", "blocked", "quarantined", "deferred")
FAILURE_KINDS = ("rejected", "blocked", "quarantined", "undelivered")


@dataclass(frozen=True)
class Message:
    user: int
    received: float
    size: int
    kind: str  # one of KINDS; "deferred" resolves to `final` at `resolved_at`
    domain: str
    dsn: str = ""
    final: str = ""
    resolved_at: float = 0.0

    def kind_at(self, now: float) -> str:
        if self.kind == "deferred" and now >= self.resolved_at:
            return self.final
        return self.kind


def _generate_day(seed: int, day: int, users: int, per_user: int, resolve_within: float) -> list:
    rng = random.Random(f"{seed}:usage:{day}")
    messages = []
    for user in range(users):
        for _ in range(rng.randint(0, per_user)):
            received = day * DAY + rng.random() * DAY
            roll = rng.random()
            kind = (
                "rejected" if roll < 0.03 else "blocked" if roll < 0.06
                else "quarantined" if roll < 0.08 else "undelivered" if roll < 0.14
                else "deferred" if roll < 0.24 else "delivered"
            )  # fmt: skip
            domain = rng.choice(DOMAINS)
            final, resolved_at, dsn = "", 0.0, ""
            if kind == "deferred":
                resolved_at = received + rng.uniform(600, resolve_within)
                final = "delivered" if rng.random() < 0.7 else "undelivered"
            if kind == "undelivered" or final == "undelivered":
                dsn = rng.choice(tuple(DSN_DETAILS))
            messages.append(
                Message(user, received, rng.randint(2_000, 200_000), kind, domain, dsn, final,
                        resolved_at)
            )  # fmt: skip
    return messages


def relay_user_id(user: int) -> str:
    return f"ru-{user:05d}"


def relay_user_name(user: int) -> str:
    return f"relay user {user:05d}"


def _date(text: Any) -> float:
    if not isinstance(text, str) or not DATE_RE.match(text):
        raise ValueError(text)
    day = date.fromisoformat(text)
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class SerUsageSimulator(SerSimulator):
    relay_users: int = 120
    messages_per_user_day: int = 12  # at most; each user-day draws 0..this
    resolve_within: float = 2.5 * DAY
    # "per_endpoint" (as the community client models them: pagination for the
    # relay-user reports, totalCount for delivery failures by domain), "pagination",
    # "total_count", or "none"
    metadata_form: str = "per_endpoint"
    # sent as every page's `metadata` in place of the true one: a vendor whose page
    # counts are wrong (too high or too low) while its pages hold the true rows
    lying_metadata: Optional[dict] = None
    # the alternate names: blockedMessage, totalMessages (for requestedMessages),
    # dsn_code (for dsnCode)
    renamed_fields: bool = False
    throughput_as_strings: bool = True
    max_page_size: int = 500
    # the overview's figures are refreshed this often; lastUpdated tells when
    overview_refresh: float = 6 * 3600.0
    deployment_type: str = "SER_STANDARD"
    # 404 for /v2/usage/overview: a tenant that answers only v1
    v2_overview: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._days: dict[int, tuple] = {}
        self._users_of_day: dict[int, dict] = {}

    # -- data ------------------------------------------------------------------------

    def _day(self, day: int) -> tuple:
        """(messages, sorted resolve times) of a UTC day (day number since the epoch)."""
        with self._lock:
            cached = self._days.get(day)
        if cached is None:
            messages = _generate_day(
                self.seed, day, self.relay_users, self.messages_per_user_day, self.resolve_within
            )
            times = sorted(m.resolved_at for m in messages if m.kind == "deferred")
            cached = (messages, times)
            with self._lock:
                self._days[day] = cached
        return cached

    def messages_of(self, start: float, end: float, at: float, user: Optional[int] = None) -> list:
        """Messages received in [start, end) before `at` (of one relay user, or all)."""
        found = []
        for day in range(int(start // DAY), math.ceil(min(end, at) / DAY)):
            messages = self._day(day)[0]
            if user is not None:
                messages = self._by_user(day).get(user, ())
            found.extend(m for m in messages if start <= m.received < min(end, at))
        return found

    def _by_user(self, day: int) -> dict:
        with self._lock:
            cached = self._users_of_day.get(day)
        if cached is None:
            cached = defaultdict(list)
            for m in self._day(day)[0]:
                cached[m.user].append(m)
            with self._lock:
                self._users_of_day[day] = cached
        return cached

    def user_counts(
        self, start: float, end: float, at: Optional[float] = None, user: Optional[int] = None
    ) -> dict:
        """Per relay user: message counts by kind (at `at`), sizes, failures by
        (domain, DSN code) and the last failure's time."""
        now = self.clock.now() if at is None else at
        per_user: dict[int, Counter] = defaultdict(Counter)
        domains: dict[int, Counter] = defaultdict(Counter)
        last_failed: dict[int, float] = {}
        for m in self.messages_of(start, end, now, user):
            kind = m.kind_at(now)
            counts = per_user[m.user]
            counts["requested"] += 1
            counts[kind] += 1
            counts["requested_bytes"] += m.size
            if kind not in ("rejected", "blocked"):
                counts["accepted"] += 1
                counts["accepted_bytes"] += m.size
                if kind != "quarantined":
                    counts["sent"] += 1
                    counts["sent_bytes"] += m.size
            if kind in FAILURE_KINDS:
                last_failed[m.user] = max(last_failed.get(m.user, 0.0), m.received)
            if kind == "undelivered":
                domains[m.user][(m.domain, m.dsn)] += 1
        return {"counts": per_user, "domains": domains, "last_failed": last_failed}

    def _number(self, value: int) -> Any:
        return str(value) if self.throughput_as_strings else value

    def usage_row(self, user: int, c: Counter) -> dict:
        accepted = c["accepted"]
        row = {
            "relayUserId": relay_user_id(user),
            "name": relay_user_name(user),
            "requestedMessages": c["requested"],
            "acceptedMessages": accepted,
            "sentMessages": c["sent"],
            "deliveredMessages": c["delivered"],
            "undeliveredMessages": c["undelivered"],
            "rejectedMessages": c["rejected"],
            "blockedMessages": c["blocked"],
            "quarantinedMessages": c["quarantined"],
            "requestedThroughput": self._number(c["requested_bytes"]),
            "acceptedThroughput": self._number(c["accepted_bytes"]),
            "sentThroughput": self._number(c["sent_bytes"]),
            "avgAcceptedMessageSize": self._number(
                c["accepted_bytes"] // accepted if accepted else 0
            ),
        }
        if self.renamed_fields:
            row["totalMessages"] = row.pop("requestedMessages")
            row["blockedMessage"] = row.pop("blockedMessages")
        return row

    def failure_row(self, user: int, c: Counter, last_failed: float) -> dict:
        failed = c["blocked"] + c["rejected"] + c["undelivered"] + c["quarantined"]
        return {
            "relayUserId": relay_user_id(user),
            "name": relay_user_name(user),
            "totalRequestedMessages": c["requested"],
            "totalFailedMessages": failed,
            "totalFailureRate": round(100.0 * failed / c["requested"], 2),
            "policyViolationMessages": c["blocked"],
            "filteredMessages": c["rejected"],
            "deliveryFailureMessages": c["undelivered"],
            "quarantinedMessages": c["quarantined"],
            "lastFailedDate": _iso(last_failed),
        }

    def domain_rows(self, by_code: Counter) -> list:
        rows = []
        for (domain, dsn), count in sorted(by_code.items()):
            row = {"domain": domain, "dsnCode": dsn, "details": DSN_DETAILS[dsn], "count": count}
            if self.renamed_fields:
                row["dsn_code"] = row.pop("dsnCode")
            rows.append(row)
        return rows

    def report_rows(self, path: str, start: float, end: float) -> list:
        match = DOMAIN_RE.match(path)
        if match:
            user_id = unquote(match.group(1))
            user = int(user_id[3:]) if re.match(r"^ru-\d{5}$", user_id) else -1
            return self.domain_rows(self.user_counts(start, end, user=user)["domains"][user])
        truth = self.user_counts(start, end)
        counts = truth["counts"]
        if path == RELAY_USAGE:
            return [self.usage_row(user, counts[user]) for user in sorted(counts)]
        if path == RELAY_FAILURES:
            return [
                self.failure_row(user, counts[user], truth["last_failed"][user])
                for user in sorted(counts)
                if user in truth["last_failed"]
            ]
        raise AssertionError(f"no report at {path}")

    def traffic_summary(self, start: float, end: float) -> dict:
        total: Counter = Counter()
        for c in self.user_counts(start, end)["counts"].values():
            total.update(c)
        return {
            "startDate": _iso(start)[:10],
            "endDate": _iso(end - DAY)[:10],
            "totalMessages": total["requested"],
            "acceptedMessages": total["accepted"],
            "sentMessages": total["sent"],
            "deliveredMessages": total["delivered"],
            "undeliveredMessages": total["undelivered"],
            "rejectedMessages": total["rejected"],
            "blockedMessages": total["blocked"],
            "quarantinedMessages": total["quarantined"],
            "requestedThroughput": self._number(total["requested_bytes"]),
            "acceptedThroughput": self._number(total["accepted_bytes"]),
            "sentThroughput": self._number(total["sent_bytes"]),
            "unauthorizedSenderMessages": 0,
            "messagingLimitsMessages": 0,
            "suppressedMessages": 0,
            "filteredMessages": total["rejected"],
            "deliveryFailureMessages": total["undelivered"],
        }

    def last_updated(self, at: Optional[float] = None) -> float:
        now = self.clock.now() if at is None else at
        return float(int(now // self.overview_refresh) * self.overview_refresh)

    def overview_data(self, version: str, at: Optional[float] = None) -> dict:
        """The overview as of its last refresh (its figures change only with lastUpdated)."""
        updated = self.last_updated(at)
        start_day = int(self.license_start // DAY)
        days = max(1, int(updated // DAY) - start_day)
        daily = [
            self._accepted_bytes(d, updated) for d in range(start_day, int(updated // DAY) + 1)
        ]
        accepted = sum(daily)
        limit = self.annual_throughput
        average = accepted // days
        licence_days = int((self.license_end - self.license_start) // DAY)
        forecast = average * licence_days
        full_days = daily[:-1] or [0]
        data = {
            "throughputLimit": self._number(limit),
            "averageDailyThroughput": self._number(average),
            "throughputForecast": self._number(forecast),
            "remainingThroughput": self._number(max(0, limit - accepted)),
            "acceptedThroughput": self._number(accepted),
            "licenseStartDate": _iso(self.license_start)[:10],
            "licenseEndDate": _iso(self.license_end)[:10],
            "average7DayThroughput": self._number(sum(full_days[-7:]) // len(full_days[-7:])),
            "average30DayThroughput": self._number(sum(full_days[-30:]) // len(full_days[-30:])),
        }
        if version == "v2":
            data.update(
                deploymentType=self.deployment_type,
                licenseDaysRemaining=max(0, int((self.license_end - updated) // DAY)),
                throughputForecastStatus="ON_TRACK" if forecast <= limit else "OVER_LIMIT",
                lastUpdated=_iso(updated),
            )
        return data

    def _accepted_bytes(self, day: int, at: float) -> int:
        return sum(
            m.size
            for m in self._day(day)[0]
            if m.received < at and m.kind not in ("rejected", "blocked")
        )

    def changes_pending(self, day_start: float, at: Optional[float] = None) -> int:
        """Deferred messages of that day not resolved yet at `at`."""
        now = self.clock.now() if at is None else at
        times = self._day(int(day_start // DAY))[1]
        return len(times) - bisect.bisect_right(times, now)

    # -- counters for tests ------------------------------------------------------------

    @property
    def data_requests(self) -> int:
        return sum(1 for e in list(self.log) if e.path != TOKEN_PATH)

    @property
    def rejected_429(self) -> int:
        return sum(1 for e in list(self.log) if e.path != TOKEN_PATH and e.status == 429)

    def requests_to(self, path_prefix: str) -> list:
        return [e for e in list(self.log) if e.path.startswith(path_prefix)]

    def account_fields(self, **overrides: str) -> dict:
        return super().account_fields(reporting_url=self.url, **overrides)

    # -- request handling --------------------------------------------------------------

    def handle_other(
        self, method: str, path: str, query: dict, body: bytes, headers: Any
    ) -> tuple[int, Any, dict]:
        known_get = path in (OVERVIEW_V1, OVERVIEW_V2, TRAFFIC_SUMMARY)
        known_post = path in (RELAY_USAGE, RELAY_FAILURES) or DOMAIN_RE.match(path)
        if not (known_get and method == "GET") and not (known_post and method == "POST"):
            return super().handle_other(method, path, query, body, headers)
        refused = self.gate(headers)
        if refused is not None:
            return refused
        if path == OVERVIEW_V2 and not self.v2_overview:
            return 404, {"message": "Not Found"}, {}
        if path in (OVERVIEW_V1, OVERVIEW_V2):
            return 200, {"data": self.overview_data(path[1:3])}, {}
        if path == TRAFFIC_SUMMARY:
            try:
                start, end = self._range(query.get("dates[gte]"), query.get("dates[lte]"))
            except ValueError as bad:
                return 400, {"message": f"Invalid date {bad}: use YYYY-MM-DD"}, {}
            return 200, self.traffic_summary(start, end), {}
        try:
            request = json.loads(body or b"{}")
            dates = request.get("dates") or {}
            start, end = self._range(dates.get("gte"), dates.get("lte"))
            page = int(request.get("pageNum", 1))
            size = int(request.get("pageSize", 100))
        except (ValueError, TypeError, AttributeError) as bad:
            return 400, {"message": f"Invalid request {bad}: dates must be YYYY-MM-DD"}, {}
        if page < 1 or not 1 <= size <= self.max_page_size:
            return 400, {"message": f"pageNum must be >= 1, pageSize 1 to {self.max_page_size}"}, {}
        rows = self.report_rows(path, start, end)
        order_by = request.get("orderBy")
        if order_by:
            descending = str(request.get("orderDir", "asc")).lower() == "desc"
            rows.sort(key=lambda row: (str(row.get(order_by, "")), str(row)), reverse=descending)
        return 200, self._page(path, rows, page, size), {}

    def _range(self, gte: Any, lte: Any) -> tuple[float, float]:
        start, last = _date(gte), _date(lte)
        if last < start:
            raise ValueError(f"{lte} before {gte}")
        return start, last + DAY

    def _page(self, path: str, rows: list, page: int, size: int) -> dict:
        total = len(rows)
        answer: dict[str, Any] = {"data": rows[(page - 1) * size : page * size]}
        form = self.metadata_form
        if form == "per_endpoint":
            form = "total_count" if DOMAIN_RE.match(path) else "pagination"
        if form == "pagination":
            answer["metadata"] = {
                "pagination": {
                    "currentPage": page,
                    "itemsPerPage": size,
                    "totalItemCount": total,
                    "totalPages": math.ceil(total / size),
                }
            }
        elif form == "total_count":
            answer["metadata"] = {"totalCount": total}
            if DOMAIN_RE.match(path):
                answer["metadata"]["dsnCodes"] = sorted(
                    {r.get("dsnCode", r.get("dsn_code")) for r in rows}
                )
                answer["metadata"]["domains"] = sorted({r["domain"] for r in rows})
        if self.lying_metadata is not None:
            answer["metadata"] = json.loads(json.dumps(self.lying_metadata))
        return answer


@dataclass
class Truth:
    """The simulator's figures for one day, in the add-on's field names."""

    usage: dict = field(default_factory=dict)  # relay_user_id -> fields
    failures: dict = field(default_factory=dict)
    domains: dict = field(default_factory=dict)  # (relay_user_id, domain, dsn) -> count


def truth(sim: SerUsageSimulator, day_start: float, at: Optional[float] = None) -> Truth:
    found = sim.user_counts(day_start, day_start + DAY, at)
    result = Truth()
    for user, c in found["counts"].items():
        uid = relay_user_id(user)
        result.usage[uid] = {
            "requested_messages": c["requested"],
            "accepted_messages": c["accepted"],
            "sent_messages": c["sent"],
            "delivered_messages": c["delivered"],
            "undelivered_messages": c["undelivered"],
            "rejected_messages": c["rejected"],
            "blocked_messages": c["blocked"],
            "quarantined_messages": c["quarantined"],
            "requested_throughput": c["requested_bytes"],
            "accepted_throughput": c["accepted_bytes"],
            "sent_throughput": c["sent_bytes"],
        }
        if user in found["last_failed"]:
            result.failures[uid] = {
                "total_requested_messages": c["requested"],
                "total_failed_messages": c["blocked"] + c["rejected"] + c["undelivered"]
                + c["quarantined"],
                "policy_violation_messages": c["blocked"],
                "filtered_messages": c["rejected"],
                "delivery_failure_messages": c["undelivered"],
                "quarantined_messages": c["quarantined"],
            }  # fmt: skip
        for (domain, dsn), count in found["domains"][user].items():
            result.domains[(uid, domain, dsn)] = count
    return result
