"""A small, hardened HTTP/1.1 server for webhook receivers (TLS 1.2+ or plain behind a proxy).

HTTP/1.1 framing (request line, headers, Content-Length, chunked bodies, keep-alive)
is h11's: a maintained, pure-Python parser that refuses what RFC 9112 refuses (a
chunk size that is not 1 to 20 hex digits, a Content-Length that is not plain
digits, a header block past 64 KiB). Why h11 and not http.server or cheroot:
docs/sense_listener.md ("Why h11"). Around it, this module bounds what a peer can
cost (docs/sense_listener.md, "What the listener refuses"):

- a peer the application does not admit (`admit(address)`, the allow-list) is
  closed right after accept(), before any TLS handshake or read: it never holds a
  connection slot;
- every request has one deadline covering the TLS handshake, request line, headers
  and body; a keep-alive connection waits a shorter idle time for the next request;
- the application refuses a request (404/405/401) from its head, and the server
  answers 413 from Content-Length, before a byte of the body is read; a chunked
  body is refused 413 as soon as it grows past the limit; an unread body is then
  drained for a bounded time so that the client can read the answer instead of a
  connection reset;
- at most `max_connections` connections are served at once; more wait in the
  listen backlog, so a flood cannot exhaust threads or memory;
- `serve(stop)` returns once `stop` is set, after the requests in flight finished.

The application is any object with `precheck(request) -> Optional[Response]` and
`handle(request, body) -> Response` (see `Application`). The benchmark's baseline
server is this server with an application that only answers 200.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import re
import select
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol
from urllib.parse import urlsplit

import h11

# the request line and headers together; past it h11 answers 431
MAX_HEAD_BYTES = 64 << 10
HEAD_TOO_LARGE = "the request head is larger than 64 KiB"
_READ_BYTES = 64 << 10
_TLS_HANDSHAKE_RECORD = 0x16
_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
# h11 quotes the offending bytes in some messages ("illegal header line: b'...'"):
# they may hold a key, so neither the log nor the answer repeats them
_QUOTED_BYTES = re.compile(r":? (?:b['\"]|bytearray\().*", re.DOTALL)
_REFUSAL_LOG_EVERY = 10.0


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20
    # the whole request: TLS handshake, request line, headers and body
    request_timeout: float = 20.0
    # how long a keep-alive connection may wait for its next request
    idle_timeout: float = 5.0
    # sending one answer
    write_timeout: float = 10.0
    max_connections: int = 32
    # draining an unread body after a refusal, so the client reads the answer
    linger_timeout: float = 2.0
    linger_bytes: int = 8 << 20
    # how often waiting loops look at the stop flag
    poll_interval: float = 0.2


class Headers:
    """A request's header fields as h11 parsed them; names match case-insensitively,
    values are the bytes sent, decoded as latin-1."""

    __slots__ = ("_fields",)

    def __init__(self, fields) -> None:
        self._fields = tuple((name.lower(), value) for name, value in fields)

    def get_all(self, name: str) -> list:
        wanted = name.lower()
        return [value for key, value in self._fields if key == wanted]

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        values = self.get_all(name)
        return values[0] if values else default


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Headers
    peer: str
    version: str


@dataclass(frozen=True)
class Response:
    status: int
    body: Mapping = field(default_factory=dict)
    headers: tuple = ()

    @classmethod
    def json(cls, code: int, /, headers: tuple = (), **body) -> Response:
        return cls(code, body, headers)

    @property
    def reason(self) -> Optional[str]:
        return self.body.get("reason")


class Application(Protocol):
    def precheck(self, request: Request) -> Optional[Response]: ...

    def handle(self, request: Request, body: bytes) -> Response: ...


class _Deadline(Exception):
    """The request's deadline passed: the client is cut off."""


class _Closed(Exception):
    """The connection ends without an answer (peer gone, idle, stopping)."""


class _Refused(Exception):
    """The request is refused; its head may not even have been parsed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _refusal(error: h11.RemoteProtocolError) -> _Refused:
    # h11 hints 431 for a head past its buffer and 501 for a transfer coding other
    # than chunked; the listener's answers are 400, 413 and 431 (docs/sense_listener.md)
    if error.error_status_hint == 431:
        return _Refused(431, HEAD_TOO_LARGE)
    return _Refused(400, _QUOTED_BYTES.sub("", str(error)) or "malformed request")


class _Reader:
    """Socket reads bounded by a deadline for the whole request, not per read.

    Between keep-alive requests it is in idle mode: it waits up to the idle timeout
    for the first byte of the next request, watching the stop flag, and that first
    byte starts the next request's deadline.
    """

    def __init__(self, sock, limits: Limits, stop: threading.Event, clock) -> None:
        self._sock = sock
        self._limits = limits
        self._stop = stop
        self._clock = clock
        self.deadline = clock() + limits.request_timeout
        self._idle_until: Optional[float] = None
        self.at_eof = False

    def expect_next_request(self) -> None:
        self._idle_until = self._clock() + self._limits.idle_timeout

    def recv(self) -> bytes:
        while True:
            now = self._clock()
            idle = self._idle_until is not None
            until = self._idle_until if idle else self.deadline
            if now >= until:
                raise _Closed("idle") if idle else _Deadline()
            if idle and self._stop.is_set():
                raise _Closed("stopping")
            wait = until - now
            self._sock.settimeout(min(wait, self._limits.poll_interval) if idle else wait)
            try:
                data = self._sock.recv(_READ_BYTES)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            if idle and data:
                self._idle_until = None
                self.deadline = self._clock() + self._limits.request_timeout
            self.at_eof = not data
            return data


def _head_size(event: h11.Request) -> int:
    """The request head's size as sent, but for optional whitespace."""
    line = len(event.method) + len(event.target) + 12  # " ", " HTTP/1.1", CRLF
    return line + sum(len(name) + len(value) + 4 for name, value in event.headers) + 2


def _normalise_peer(address: str) -> str:
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    mapped = getattr(parsed, "ipv4_mapped", None)
    return str(mapped or parsed)


class ListenerServer:
    def __init__(
        self,
        address: tuple,
        app: Application,
        *,
        ssl_context: Optional[ssl.SSLContext] = None,
        limits: Optional[Limits] = None,
        logger: Optional[logging.Logger] = None,
        clock: Callable[[], float] = time.monotonic,
        admit: Optional[Callable[[str], bool]] = None,
    ) -> None:
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=128)
        self.address = self._sock.getsockname()[:2]
        self._app = app
        self._admit = admit
        self._ssl = ssl_context
        self._limits = limits = limits or Limits()
        self._logger = logger or logging.getLogger(__name__)
        self._clock = clock
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._workers: set = set()
        self._workers_lock = threading.Lock()
        self.stats: Counter = Counter()
        self._stop = threading.Event()
        self._refusals_logged_at = None
        self._refusals_unlogged = 0

    @property
    def port(self) -> int:
        return self.address[1]

    def close(self) -> None:
        self._sock.close()

    # -- accepting -------------------------------------------------------------

    def serve(self, stop: threading.Event, tick: Optional[Callable[[], None]] = None) -> None:
        """Accept connections until `stop` is set; then finish what is in flight.

        `tick` is called about every poll interval (the service's heartbeat)."""
        poll = self._limits.poll_interval
        tick = tick or (lambda: None)
        self._stop = stop
        try:
            while not stop.is_set():
                tick()
                try:
                    ready, _, _ = select.select([self._sock], [], [], poll)
                    connection, peer = self._sock.accept() if ready else (None, None)
                except OSError as error:
                    self._logger.warning("action=accept_failed error=%r", error)
                    connection = None
                if connection is None:
                    continue
                address = _normalise_peer(peer[0])
                if self._admit is not None and not self._admit(address):
                    self._refuse(connection, address)
                    continue
                if not self._take_slot(stop, tick):
                    _close(connection)
                    break
                _no_delay(connection)
                worker = threading.Thread(
                    target=self._worker,
                    args=(connection, address, stop),
                    name=f"listener-{peer[0]}:{peer[1]}",
                    daemon=True,
                )
                with self._workers_lock:
                    self._workers.add(worker)
                worker.start()
        finally:
            # refuse new connections from here on; finish the ones we have
            self._sock.close()
            self._drain()

    def _take_slot(self, stop: threading.Event, tick: Callable[[], None]) -> bool:
        """Wait for a free connection slot; False when stopping first. Only admitted
        peers get here: a refused one never waits for, nor holds, a slot."""
        while not stop.is_set():
            if self._slots.acquire(timeout=self._limits.poll_interval):
                return True
            tick()
        return False

    def _refuse(self, connection: socket.socket, address: str) -> None:
        """Close a connection from a source outside the allow-list at once, with a
        reset: nothing is read, no handshake is made, no TIME_WAIT is kept. The log
        says so at most every few seconds, so that a flood cannot fill the log."""
        self.stats["refused_source"] += 1
        with contextlib.suppress(OSError):
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            connection.close()
        self._refusals_unlogged += 1
        now = self._clock()
        last = self._refusals_logged_at
        if last is None or now - last >= _REFUSAL_LOG_EVERY:
            self._refusals_logged_at = now
            self._logger.warning(
                "action=source_refused source_ip=%s connections=%d: "
                "the address is not in allowed_sources",
                address,
                self._refusals_unlogged,
            )
            self._refusals_unlogged = 0

    def _drain(self) -> None:
        limits = self._limits
        give_up = self._clock() + (
            limits.request_timeout + limits.write_timeout + limits.linger_timeout + 1
        )
        while True:
            with self._workers_lock:
                workers = list(self._workers)
            if not workers:
                return
            remaining = give_up - self._clock()
            if remaining <= 0:
                self._logger.warning(
                    "action=stop_abandoned connections=%d: still open after their deadline",
                    len(workers),
                )
                return
            workers[0].join(remaining)

    # -- one connection --------------------------------------------------------

    def _worker(self, raw: socket.socket, peer: str, stop: threading.Event) -> None:
        try:
            self.serve_connection(raw, peer, stop)
        finally:
            self._slots.release()
            with self._workers_lock:
                self._workers.discard(threading.current_thread())

    def serve_connection(self, raw, peer: str, stop: threading.Event) -> None:
        """Serve the requests of one accepted connection, then close it. The accept
        loop runs this in a worker thread holding a connection slot."""
        connection = raw
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.stats["connections"] += 1
        try:
            reader = _Reader(raw, self._limits, stop, self._clock)
            if self._ssl is not None:
                tls = self._start_tls(raw, http, peer, reader.deadline)
                if tls is None:
                    return
                connection = tls
                reader = _Reader(connection, self._limits, stop, self._clock)
            while self._serve_request(connection, http, reader, peer):
                if stop.is_set():
                    break
                http.start_next_cycle()
                reader.expect_next_request()
        except _Deadline:
            self.stats["timed_out"] += 1
            self._logger.warning(
                "action=request_timed_out source_ip=%s timeout_s=%s: the client was cut off",
                peer,
                self._limits.request_timeout,
            )
            self._send(
                connection, http, Response.json(408, status="error", reason="request timeout")
            )
        except _Closed:
            pass
        except (OSError, ssl.SSLError) as error:
            self.stats["connection_errors"] += 1
            self._logger.info("action=connection_error source_ip=%s error=%r", peer, error)
        except Exception as error:  # never let one connection take the listener down
            self.stats["internal_errors"] += 1
            self._logger.exception("action=connection_failed source_ip=%s error=%r", peer, error)
        finally:
            _close(connection)

    def _start_tls(self, raw: socket.socket, http: h11.Connection, peer: str, deadline: float):
        first = self._peek(raw, deadline)
        if first is None:
            return None
        if first[0] != _TLS_HANDSHAKE_RECORD:
            # Plain HTTP on the TLS port: say so in plain HTTP rather than a TLS alert
            # the client cannot read; nothing was read as a request.
            self.stats["plain_http_on_tls"] += 1
            self._logger.warning("action=plain_http_on_tls_port source_ip=%s", peer)
            if first[:1].isalpha():
                self._send(
                    raw,
                    http,
                    Response.json(
                        400, status="error", reason="this port speaks HTTPS: use https://"
                    ),
                )
                self._linger(raw)
            return None
        connection = self._ssl.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise _Closed("handshake timeout")
            connection.settimeout(remaining)
            try:
                connection.do_handshake()
                return connection
            except socket.timeout:
                raise _Closed("handshake timeout") from None
            except ssl.SSLError as error:
                self.stats["tls_failed"] += 1
                self._logger.warning(
                    "action=tls_handshake_failed source_ip=%s error=%s", peer, error.reason
                )
                return None

    def _peek(self, raw: socket.socket, deadline: float) -> Optional[bytes]:
        remaining = deadline - self._clock()
        if remaining <= 0:
            return None
        raw.settimeout(remaining)
        try:
            first = raw.recv(8, socket.MSG_PEEK)
        except socket.timeout:
            raise _Closed("no data") from None
        return first or None

    def _next_event(self, http: h11.Connection, reader: _Reader):
        """The next h11 event, reading as much as it needs. A framing error is a
        refusal (400 or 431); the peer closing mid-request ends the connection."""
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as error:
                if reader.at_eof:
                    raise _Closed("peer closed mid-request") from None
                raise _refusal(error) from None
            if event is h11.NEED_DATA:
                http.receive_data(reader.recv())
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise _Closed("peer closed")
            return event

    def _serve_request(self, connection, http: h11.Connection, reader: _Reader, peer: str) -> bool:
        """Serve one request; True when the connection stays open for another."""
        try:
            request, length, chunked = self._read_head(http, reader, peer)
        except _Refused as error:
            self._refuse_request(connection, http, peer, error)
            return False
        response = self._app.precheck(request)
        if response is None and length > self._limits.max_body_bytes:
            response = self._too_large()
        body_pending = chunked or length > 0
        if response is not None:
            if not body_pending:
                self._next_event(http, reader)  # the empty body's end: nothing is read
            return self._answer(connection, http, response, lingering=body_pending)
        if http.they_are_waiting_for_100_continue:
            data = http.send(
                h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
            )
            self._write(connection, data)
        try:
            body = self._read_body(http, reader)
        except _Refused as error:
            self._refuse_request(connection, http, peer, error)
            return False
        try:
            response = self._app.handle(request, body)
        except Exception as error:
            self.stats["internal_errors"] += 1
            self._logger.exception("action=handler_failed source_ip=%s error=%r", peer, error)
            response = Response.json(500, status="error", reason="internal error")
            return self._answer(connection, http, response, closing=True)
        return self._answer(connection, http, response)

    def _read_head(self, http: h11.Connection, reader: _Reader, peer: str) -> tuple:
        event = self._next_event(http, reader)
        if _head_size(event) > MAX_HEAD_BYTES:
            # h11 bounds a head still arriving; one that arrived whole within a
            # single read is measured here, so the bound does not depend on the reads
            raise _Refused(431, HEAD_TOO_LARGE)
        headers = Headers(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in event.headers
        )
        chunked = bool(headers.get_all("Transfer-Encoding"))
        lengths = headers.get_all("Content-Length")
        if chunked and lengths:
            # both framings at once is how requests are smuggled past proxies
            raise _Refused(400, "both Transfer-Encoding and Content-Length")
        try:
            # h11 checks the target's characters, not its form: "//[x" passes
            path = urlsplit(event.target.decode("latin-1")).path or "/"
        except ValueError:
            raise _Refused(400, "malformed request target") from None
        request = Request(
            method=event.method.decode("latin-1"),
            path=path,
            headers=headers,
            peer=peer,
            version=f"HTTP/{event.http_version.decode('latin-1')}",
        )
        # h11 checked the value: 1 to 20 plain digits, one value however repeated
        return request, int(lengths[0]) if lengths else 0, chunked

    def _read_body(self, http: h11.Connection, reader: _Reader) -> bytes:
        """The body, refused 413 as soon as it grows past the limit (a chunked body
        has no length to refuse it from beforehand)."""
        limit = self._limits.max_body_bytes
        parts, total = [], 0
        while True:
            event = self._next_event(http, reader)
            if isinstance(event, h11.EndOfMessage):  # trailers, if any, are not used
                return b"".join(parts)
            total += len(event.data)
            if total > limit:
                raise _Refused(413, self._too_large().reason)
            parts.append(event.data)

    def _too_large(self) -> Response:
        return Response.json(
            413,
            status="error",
            reason=f"the body is larger than {self._limits.max_body_bytes} bytes",
        )

    # -- answering -------------------------------------------------------------

    def _refuse_request(self, connection, http: h11.Connection, peer: str, error: _Refused):
        self._logger.warning(
            "action=request_rejected status=%d reason=%r source_ip=%s",
            error.status,
            error.reason,
            peer,
        )
        response = Response.json(error.status, status="error", reason=error.reason)
        self._answer(connection, http, response, lingering=True)

    def _answer(
        self,
        connection,
        http: h11.Connection,
        response: Response,
        *,
        lingering: bool = False,
        closing: bool = False,
    ) -> bool:
        """Send the answer; True when the connection can serve another request.

        `lingering`: the request's body was not read: the connection closes after the
        rest of it was drained. While stopping, every answer closes its connection."""
        self.stats[f"status_{response.status}"] += 1
        keep_alive = not (lingering or closing or self._stop.is_set())
        self._send(connection, http, response, keep_alive=keep_alive)
        if lingering:
            self._linger(connection)
        # h11 turns keep-alive into close where the client asked for it or spoke HTTP/1.0
        return keep_alive and http.our_state is h11.DONE and http.their_state is h11.DONE

    def _send(
        self, connection, http: h11.Connection, response: Response, keep_alive: bool = False
    ) -> None:
        body = json.dumps(dict(response.body), separators=(",", ":")).encode("utf-8")
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "keep-alive" if keep_alive else "close"),
            ("Cache-Control", "no-store"),
            *response.headers,
        ]
        try:
            data = http.send(
                h11.Response(
                    status_code=response.status,
                    headers=headers,
                    reason=_REASONS.get(response.status, "Error").encode("ascii"),
                )
            )
            data += http.send(h11.Data(data=body)) + http.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return  # an answer was already under way: nothing more can be said
        try:
            self._write(connection, data)
        except OSError as error:
            if keep_alive:
                raise
            self._logger.info(
                "action=answer_not_delivered status=%d error=%r", response.status, error
            )

    def _write(self, connection, data: bytes) -> None:
        connection.settimeout(self._limits.write_timeout)
        connection.sendall(data)

    def _linger(self, connection) -> None:
        """Read and discard an unread body for a bounded time and size, then let the
        caller close.

        Closing a socket with unread data makes the kernel send a reset, which can
        destroy the answer before the client reads it.
        """
        give_up = self._clock() + self._limits.linger_timeout
        budget = self._limits.linger_bytes
        try:
            while budget > 0:
                remaining = give_up - self._clock()
                if remaining <= 0:
                    return
                connection.settimeout(remaining)
                count = len(connection.recv(_READ_BYTES))
                if not count:
                    return
                budget -= count
        except (OSError, ssl.SSLError):
            return


def _no_delay(connection: socket.socket) -> None:
    """Send each answer at once (TCP_NODELAY).

    With Nagle's algorithm on, an answer written while the client has not yet
    acknowledged the server's last TLS handshake flight (TLS 1.3 sends its session
    tickets after the handshake) waits for that acknowledgement, which the client
    delays by up to 40 ms: every answer that took more than a moment to prepare
    arrived 40 ms late. Each answer is written with one sendall, so nothing is
    gained by coalescing.
    """
    with contextlib.suppress(OSError):
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _close(connection) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        connection.close()


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """Server context: TLS 1.2 or later only, Python's default (modern) ciphers."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context
