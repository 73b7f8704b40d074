"""A Proofpoint SER reporting API simulator (docs/ser_report.md, seeds 000/001).

- `POST /v1/token`: OAuth client credentials (form fields `grant_type`, `client_id`,
  `client_secret`) answering `access_token` and a configurable `expires_in`; a wrong
  client gets 401, so does an expired or unknown token at the summary endpoint.
- `GET /v1/sercustomer/report/summary`: `startTimeStamp` inclusive, `endTimeStamp`
  exclusive, both `yyyy-MM-dd'T'HH:mm:ss.SSS'Z'` (anything else: 400); without a
  start the licence start is used, without an end the current time.
- Data is generated per message (seeded, hour by hour, for several applications and
  SMTP AUTH users), so any window's summary is the exact sum of its messages.
  tempFailure and inProgress messages are reclassified to success or failure within
  7 days, following the simulator's clock, which tests set and advance.
- Answers in JSON, or TEXT holding uuencoded JSON; optionally without zero counts
  and with fields the add-on does not know.
- A rolling per-minute limit answering 429 with or without Retry-After, injectable
  failures (5xx bursts, 400, 403, ...), and a request log.
"""

from __future__ import annotations

import binascii
import json
import math
import random
import re
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

from harness.certs import TestCA, TLSHTTPServer, server_ssl_context

TOKEN_PATH = "/v1/token"
SUMMARY_PATH = "/v1/sercustomer/report/summary"
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
HOUR = 3600
DAY = 86400
RECLASSIFY_WITHIN = 7 * DAY

# (applicationName, applicationUserName, fromEnvelope, fromHeader, messages an hour at most)
IDENTITIES = (
    ("Salesforce", "sf-prod", "noreply@example.com", "noreply@example.com", 6),
    ("Salesforce", "sf-marketing", "example.com", "news@example.com", 4),
    ("Workday", "workday-hr", "hr@example.com", "hr@example.com", 3),
    ("Jira Cloud", "jira", "jira@example.com", "example.com", 5),
)


class SimClock:
    """A settable clock: `sleep` advances it, so a client given this clock and
    sleep waits no real time, and the simulator sees the time the client waited."""

    def __init__(self, start: float) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def set(self, epoch: float) -> None:
        with self._lock:
            self._now = float(epoch)


class RealClock:
    now = staticmethod(time.time)
    sleep = staticmethod(time.sleep)


@dataclass(frozen=True)
class Message:
    received: float
    user: int
    recipients: int
    size: int
    outcome: str  # success, failure or partialSuccess
    pending: Optional[str] = None  # tempFailure or inProgress until resolved_at
    resolved_at: float = 0.0

    def status_at(self, now: float) -> str:
        return self.pending if self.pending and now < self.resolved_at else self.outcome


_DSN = {"success": "2.X.X", "partialSuccess": "2.X.X", "failure": "5.X.X", "tempFailure": "4.X.X"}


def _generate_hour(seed: int, hour: int, pending_messages: bool = True) -> list[Message]:
    rng = random.Random(f"{seed}:{hour}")
    messages = []
    for user, identity in enumerate(IDENTITIES):
        for _ in range(rng.randint(0, identity[4])):
            received = hour * HOUR + rng.random() * HOUR
            roll = rng.random()
            pending, resolved_at, outcome = None, 0.0, "success"
            if roll < 0.15 and not pending_messages:
                pass  # a data set where every message is settled at once
            elif roll < 0.12:
                pending = "tempFailure"
                # resolved before the window is 7 days old: the 7-day poll is final
                resolved_at = received + rng.uniform(600, RECLASSIFY_WITHIN - HOUR)
                outcome = "success" if rng.random() < 0.7 else "failure"
            elif roll < 0.15:
                pending = "inProgress"
                resolved_at = received + rng.uniform(60, 2 * HOUR)
            elif roll < 0.25:
                outcome = "failure"
            elif roll < 0.27:
                outcome = "partialSuccess"
            messages.append(
                Message(
                    received=received,
                    user=user,
                    recipients=rng.randint(1, 5),
                    size=rng.randint(2_000, 200_000),
                    outcome=outcome,
                    pending=pending,
                    resolved_at=resolved_at,
                )
            )
    return messages


def parse_timestamp(text: str) -> float:
    if not TIMESTAMP_RE.match(text):
        raise ValueError(text)
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return moment.timestamp()


def format_timestamp(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def uuencode(data: bytes, name: str = "summary.json") -> str:
    lines = [f"begin 644 {name}"]
    for offset in range(0, len(data), 45):
        lines.append(binascii.b2a_uu(data[offset : offset + 45]).decode("ascii").rstrip("\n"))
    lines += ["`", "end", ""]
    return "\n".join(lines)


@dataclass
class LoggedRequest:
    at: float  # simulator clock
    method: str
    path: str
    query: dict
    status: int
    retry_after: Optional[str] = None  # the Retry-After header answered
    real: float = field(default_factory=time.monotonic)  # for waits on the real clock


@dataclass
class Injected:
    status: int
    message: str
    retry_after: Optional[str] = None


@dataclass
class SerSimulator:
    ca: TestCA
    clock: Any = field(default_factory=RealClock)
    seed: int = 7
    client_id: str = "ser-demo-key"
    client_secret: str = field(default_factory=lambda: "s3cr3t-" + secrets.token_hex(8))
    expires_in: int = 43200
    limit_per_minute: int = 1000
    # "always", "never" or "alternate": whether a 429 carries Retry-After
    retry_after_mode: str = "always"
    answer_format: str = "json"  # or "uu"
    omit_zero_counts: bool = False
    extra_fields: bool = False
    license_start: float = 0.0
    license_end: float = 0.0
    annual_throughput: int = 50 * 1024**3
    # limit window length: tests with a real clock may shorten it
    limit_window: float = 60.0
    # the clock of the rate limit (default: `clock`); a test that freezes the data
    # clock gives the limit a real one, so that waiting frees slots
    limit_clock: Any = None
    # False: no tempFailure / inProgress message, so no window ever changes
    pending_messages: bool = True

    def __post_init__(self) -> None:
        if not self.license_start:
            now = self.clock.now()
            self.license_start = float(int(now - 120 * DAY) // DAY * DAY)
        if not self.license_end:
            self.license_end = self.license_start + 365 * DAY
        if self.limit_clock is None:
            self.limit_clock = self.clock
        self.log: list[LoggedRequest] = []
        self.forbidden = False
        self._tokens: dict[str, float] = {}
        self._hours: dict[int, list[Message]] = {}
        self._admitted: deque = deque()
        self._injected: deque = deque()
        self._limited = 0
        self._lock = threading.Lock()
        self._server: Optional[TLSHTTPServer] = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> SerSimulator:
        handler = type("SerHandler", (_Handler,), {"sim": self})
        context = server_ssl_context(self.ca.issue_server(("127.0.0.1", "localhost")))
        self._server = TLSHTTPServer(("127.0.0.1", 0), handler, context).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> SerSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start the simulator first"
        return self._server.url

    def account_fields(self, **overrides: str) -> dict:
        fields = {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "auth_url": self.url + TOKEN_PATH,
            "api_url": self.url,
            "ca_bundle": self.ca.cert_pem.decode("ascii"),
        }
        fields.update(overrides)
        return fields

    # -- data ------------------------------------------------------------------------

    def messages(self, start: float, end: float, at: Optional[float] = None) -> list[Message]:
        """Messages received in [start, end) and not in the future (of `at`, default now)."""
        end = min(end, self.clock.now() if at is None else at)
        found = []
        for hour in range(int(start // HOUR), math.ceil(end / HOUR)):
            with self._lock:
                batch = self._hours.get(hour)
                if batch is None:
                    batch = self._hours[hour] = _generate_hour(
                        self.seed, hour, self.pending_messages
                    )
            found.extend(m for m in batch if start <= m.received < end)
        return found

    def expected(self, start: float, end: float, at: Optional[float] = None) -> dict:
        """The exact per-user sums for [start, end) at time `at` (default: the
        simulator's current time)."""
        now = self.clock.now() if at is None else at
        sums: dict[int, Counter] = {}
        for message in self.messages(start, end, now):
            status = message.status_at(now)
            counts = sums.setdefault(message.user, Counter())
            counts[status] += 1
            counts["total"] += 1
            counts["recipientsTotal"] += message.recipients
            counts["messageSizeTotal"] += message.size
            if status == "success":
                counts["deliveredSizeTotal"] += message.size
            elif status == "partialSuccess":
                counts["deliveredSizeTotal"] += message.size // 2
            if status in _DSN:
                counts[_DSN[status]] += 1
        return sums

    def entitlement(self) -> dict:
        return {
            "annual_throughput": self.annual_throughput,
            "license_start": format_timestamp(self.license_start),
            "license_end": format_timestamp(self.license_end),
        }

    def answer(self, start: float, end: float) -> dict:
        users = []
        for user, counts in sorted(self.expected(start, end).items()):
            app, name, envelope, header, _ = IDENTITIES[user]
            status = {
                key: counts[key]
                for key in (
                    "success", "failure", "tempFailure", "partialSuccess", "inProgress",
                    "total", "recipientsTotal",
                )
            }  # fmt: skip
            details = {key: counts[key] for key in ("2.X.X", "3.X.X", "4.X.X", "5.X.X")}
            if self.omit_zero_counts:
                status = {k: v for k, v in status.items() if v}
                details = {k: v for k, v in details.items() if v}
            entry = {
                "applicationName": app,
                "applicationUserName": name,
                "fromEnvelope": envelope,
                "fromHeader": header,
                "status": status,
                "messageSizeTotal": counts["messageSizeTotal"],
                "deliveredSizeTotal": counts["deliveredSizeTotal"],
                "details": details,
            }
            if self.extra_fields:
                entry["applicationId"] = f"app-{user:04d}"
                entry["status"]["quarantined"] = 0
            users.append(entry)
        return {"applicationUsers": users, "entitlement": self.entitlement()}

    # -- controls --------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        count: int = 1,
        message: str = "",
        retry_after: Optional[str] = None,
        after: int = 0,
    ) -> None:
        """The next `count` summary requests (that pass the rate limit) get `status`,
        once `after` more have been answered normally."""
        text = message or {500: "Internal Server Error", 502: "Bad Gateway",
                           503: "Service Unavailable"}.get(status, "injected failure")  # fmt: skip
        with self._lock:
            self._injected.extend([None] * after)
            self._injected.extend(Injected(status, text, retry_after) for _ in range(count))

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def count(self, path: Optional[str] = None, status: Optional[int] = None) -> int:
        return sum(
            1
            for entry in list(self.log)
            if (path is None or entry.path == path) and (status is None or entry.status == status)
        )

    @property
    def token_requests(self) -> int:
        return self.count(TOKEN_PATH)

    @property
    def summary_requests(self) -> int:
        return self.count(SUMMARY_PATH)

    @property
    def rejected_429(self) -> int:
        return self.count(SUMMARY_PATH, 429)

    def max_in_any_window(self) -> int:
        """The most data requests the limiter admitted in any rolling window
        (measured on `clock`: meaningful when the limit runs on it too)."""
        times = sorted(e.at for e in self.log if e.path != TOKEN_PATH and e.status != 429)
        best, left = 0, 0
        for right, moment in enumerate(times):
            while times[left] <= moment - self.limit_window:
                left += 1
            best = max(best, right - left + 1)
        return best

    # -- request handling (called from server threads) --------------------------------

    def handle_other(
        self, method: str, path: str, query: dict, body: bytes, headers: Any
    ) -> tuple[int, Any, dict]:
        """Paths other than the token and the summary (a subclass serves more)."""
        return 404, {"message": "not found"}, {}

    def handle_token(self, form: dict) -> tuple[int, dict, dict]:
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}, {}
        if form.get("client_id") != self.client_id or not secrets.compare_digest(
            form.get("client_secret", ""), self.client_secret
        ):
            return 401, {"error": "invalid_client", "error_description": "Bad credentials"}, {}
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = self.clock.now() + self.expires_in
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
        return 200, body, {}

    def _admit(self) -> Optional[float]:
        """None when admitted; else the seconds until a slot frees up."""
        now = self.limit_clock.now()
        with self._lock:
            while self._admitted and self._admitted[0] <= now - self.limit_window:
                self._admitted.popleft()
            if len(self._admitted) >= self.limit_per_minute:
                return self._admitted[0] + self.limit_window - now
            self._admitted.append(now)
            return None

    def gate(self, headers: Any) -> Optional[tuple[int, Any, dict]]:
        """What every data request meets before its answer: the rolling per-minute
        limit (429), an injected failure, the bearer token (401 when unknown or
        expired), a key without the entitlement (403). None: go on."""
        wait = self._admit()
        if wait is not None:
            with self._lock:
                self._limited += 1
                with_header = self.retry_after_mode == "always" or (
                    self.retry_after_mode == "alternate" and self._limited % 2 == 1
                )
            extra = {"Retry-After": str(max(1, math.ceil(wait)))} if with_header else {}
            message = f"Rate limit exceeded: {self.limit_per_minute} requests per minute"
            return 429, {"message": message}, extra
        with self._lock:
            injected = self._injected.popleft() if self._injected else None
        if injected is not None:
            extra = {"Retry-After": injected.retry_after} if injected.retry_after else {}
            return injected.status, {"message": injected.message}, extra
        authorization = headers.get("Authorization") or ""
        token = authorization[7:] if authorization.startswith("Bearer ") else ""
        with self._lock:
            expires_at = self._tokens.get(token)
        if expires_at is None or self.clock.now() >= expires_at:
            return 401, {"message": "Invalid or expired token"}, {}
        if self.forbidden:
            return 403, {"message": "This API key is not entitled to SER reports"}, {}
        return None

    def handle_summary(self, headers: Any, query: dict) -> tuple[int, Any, dict]:
        refused = self.gate(headers)
        if refused is not None:
            return refused
        try:
            start = parse_timestamp(query["startTimeStamp"]) if "startTimeStamp" in query else None
            end = parse_timestamp(query["endTimeStamp"]) if "endTimeStamp" in query else None
        except ValueError as bad:
            message = f"Invalid timestamp {bad}: use yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"
            return 400, {"message": message}, {}
        start = self.license_start if start is None else start
        end = self.clock.now() if end is None else end
        return 200, self.answer(start, end), {}


class _Handler(BaseHTTPRequestHandler):
    sim: SerSimulator
    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: Any, extra: dict, path: str, query: dict) -> None:
        self.sim.log.append(
            LoggedRequest(
                self.sim.clock.now(),
                self.command,
                path,
                query,
                status,
                retry_after=extra.get("Retry-After"),
            )
        )
        if status == 200 and path == SUMMARY_PATH and self.sim.answer_format == "uu":
            payload = uuencode(json.dumps(body).encode("utf-8")).encode("ascii")
            content_type = "text/plain; charset=us-ascii"
        else:
            payload = json.dumps(body).encode("utf-8")
            content_type = "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        body = self._body()
        if parts.path != TOKEN_PATH:
            status, answer, extra = self.sim.handle_other(
                "POST", parts.path, {}, body, self.headers
            )
            self._send(status, answer, extra, parts.path, {"body": body.decode("utf-8", "replace")})
            return
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        status, answer, extra = self.sim.handle_token(form)
        self._send(status, answer, extra, parts.path, {"grant_type": form.get("grant_type")})

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self._body()
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if parts.path != SUMMARY_PATH:
            status, answer, extra = self.sim.handle_other(
                "GET", parts.path, query, b"", self.headers
            )
            self._send(status, answer, extra, parts.path, query)
            return
        status, answer, extra = self.sim.handle_summary(self.headers, query)
        self._send(status, answer, extra, parts.path, query)


def expected_records(
    sim: SerSimulator, start: float, end: float, at: Optional[float] = None
) -> dict[tuple, dict]:
    """The simulator's truth for a window at time `at` (default: now), keyed by
    identity, in the add-on's field names."""
    records = {}
    for user, counts in sim.expected(start, end, at).items():
        app, name, envelope, header, _ = IDENTITIES[user]
        records[(app, name, envelope, header)] = {
            "success": counts["success"],
            "failure": counts["failure"],
            "temp_failure": counts["tempFailure"],
            "partial_success": counts["partialSuccess"],
            "in_progress": counts["inProgress"],
            "total": counts["total"],
            "recipients_total": counts["recipientsTotal"],
            "message_size_total": counts["messageSizeTotal"],
            "delivered_size_total": counts["deliveredSizeTotal"],
            "dsn_2xx": counts["2.X.X"],
            "dsn_3xx": counts["3.X.X"],
            "dsn_4xx": counts["4.X.X"],
            "dsn_5xx": counts["5.X.X"],
        }
    return records
