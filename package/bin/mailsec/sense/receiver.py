"""What the listener does with a request: who may post, what a report is, what is indexed.

A source outside the allow-list is refused by the server right after accept(), before
any TLS handshake or read (`admits`). Then checks run cheapest and least revealing
first: the path (404), the method (405) and the key (401); the body is read only
after all of them passed (docs/sense_listener.md). Events are written, and the
report remembered, under one lock: the event sink is not thread-safe, and two
copies of one report arriving together must not both be indexed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import threading
import time
from collections import Counter
from datetime import datetime
from typing import Callable, Optional

from mailsec.core.events import EventSink
from mailsec.core.timeutil import utcnow
from mailsec.sense.config import SenseListenerConfig
from mailsec.sense.dedupe import MessageLedger, message_key
from mailsec.sense.report import NotASenseReport, build_events, parse_report, report_key
from mailsec.sense.server import Request, Response


def _digest(value: bytes) -> bytes:
    # Comparing digests keeps the comparison constant-time in the key's length too.
    return hashlib.sha256(value).digest()


class SenseReceiver:
    def __init__(
        self,
        config: SenseListenerConfig,
        sink: EventSink,
        ledger: MessageLedger,
        logger: logging.Logger,
        *,
        source: Optional[str] = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._config = config
        self._sink = sink
        self._ledger = ledger
        self._logger = logger
        self._source = source
        self._clock = clock
        self._path = config.path.rstrip("/") or "/"
        self._key_digest = (
            _digest(config.api_key_value.encode("utf-8")) if config.api_key_value else None
        )
        self._networks = tuple(config.allowed_sources)
        self._lock = threading.Lock()
        self.stats: Counter = Counter()

    # -- before the body -------------------------------------------------------

    def admits(self, peer: str) -> bool:
        """Whether a connection from `peer` may be served at all (allowed_sources)."""
        if not self._networks:
            return True
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    def precheck(self, request: Request) -> Optional[Response]:
        if (request.path.rstrip("/") or "/") != self._path:
            return self._reject(request, 404, "no such path")
        if request.method != "POST":
            return self._reject(request, 405, "only POST is accepted", headers=(("Allow", "POST"),))
        if self._key_digest is not None and not self._key_matches(request):
            return self._reject(request, 401, f"missing or wrong {self._config.api_key_name}")
        return None

    def _key_matches(self, request: Request) -> bool:
        values = request.headers.get_all(self._config.api_key_name) or []
        if len(values) != 1:
            return False
        # header values are the bytes sent, decoded as latin-1: encode back to the bytes sent
        try:
            sent = values[0].strip().encode("latin-1")
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(_digest(sent), self._key_digest)

    # -- the report ------------------------------------------------------------

    def handle(self, request: Request, body: bytes) -> Response:
        started = time.monotonic()
        try:
            report = parse_report(body)
        except NotASenseReport as error:
            return self._reject(request, 400, str(error), body_bytes=len(body))
        for position, problem in report.problems:
            self.stats["bot_problems"] += 1
            self._logger.warning(
                "action=bot_entry_problem message_id=%s position=%d problem=%r",
                report.message_id,
                position,
                problem,
            )
        events = build_events(
            report, source_ip=request.peer, received_at=self._clock(), source=self._source
        )
        key = message_key(report_key(report))
        with self._lock:
            if self._ledger.seen(key):
                duplicate = True
            else:
                duplicate = False
                # 200 only once the sink returned: then the events are flushed to splunkd
                self._sink.write(events)
                self._ledger.record(key)
        latency_ms = round((time.monotonic() - started) * 1000, 1)
        if duplicate:
            self.stats["duplicates"] += 1
            self._logger.info(
                "action=report_duplicate message_id=%s org=%s env=%s source_ip=%s",
                report.message_id,
                report.org,
                report.env,
                request.peer,
            )
            return Response.json(200, status="duplicate", message_id=report.message_id)
        self.stats["reports"] += 1
        self.stats["events"] += len(events)
        self._logger.info(
            "action=report_indexed message_id=%s org=%s env=%s source_ip=%s bots=%d "
            "bots_skipped=%d total_number_of_bots=%d events=%d latency_ms=%s",
            report.message_id,
            report.org,
            report.env,
            request.peer,
            len(report.bots),
            report.bots_skipped,
            report.total_number_of_bots,
            len(events),
            latency_ms,
        )
        return Response.json(
            200,
            status="ok",
            message_id=report.message_id,
            bots=len(report.bots),
            bots_skipped=report.bots_skipped,
            events=len(events),
        )

    def _reject(
        self, request: Request, status: int, reason: str, headers: tuple = (), body_bytes=None
    ) -> Response:
        self.stats[f"rejected_{status}"] += 1
        # never the key header's value: only which check failed
        self._logger.warning(
            "action=request_rejected status=%d reason=%r source_ip=%s method=%s path=%r%s",
            status,
            reason,
            request.peer,
            request.method,
            request.path[:200],
            "" if body_bytes is None else f" body_bytes={body_bytes}",
        )
        return Response.json(status, headers=headers, status="error", reason=reason)
