"""A small, hardened HTTP/1.1 server for webhook receivers (TLS 1.2+ or plain behind a proxy).

Why not http.server: its timeouts apply per socket read, so a client trickling one
byte at a time holds a thread forever; it reads a body before anyone can refuse it;
and it has no bound on connections. Here:

- every request has one deadline covering the TLS handshake, request line, headers
  and body; a keep-alive connection waits a shorter idle time for the next request;
- the application refuses a request (403/404/405/401) from its head, and the server
  answers 413 from Content-Length, before a byte of the body is read; an unread body
  is then drained for a bounded time so that the client can read the answer instead
  of a connection reset;
- at most `max_connections` connections are served at once; more wait in the
  listen backlog, so a flood cannot exhaust threads or memory;
- `serve(stop)` returns once `stop` is set, after the requests in flight finished.

The application is any object with `precheck(request) -> Optional[Response]` and
`handle(request, body) -> Response` (see `Application`). The benchmark's baseline
server is this server with an application that only answers 200.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import ipaddress
import json
import logging
import select
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Callable, Optional, Protocol
from urllib.parse import urlsplit

_MAX_REQUEST_LINE = 8192
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
    500: "Internal Server Error",
    503: "Service Unavailable",
}


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


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Message
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


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _DeadlineReader(io.RawIOBase):
    """Raw socket reads bounded by a deadline for the whole request, not per read.

    Between keep-alive requests it is in idle mode: it waits up to the idle timeout
    for the first byte of the next request, watching the stop flag, and that first
    byte starts the next request's deadline.
    """

    def __init__(self, sock: socket.socket, limits: Limits, stop: threading.Event, clock) -> None:
        super().__init__()
        self._sock = sock
        self._limits = limits
        self._stop = stop
        self._clock = clock
        self.deadline = clock() + limits.request_timeout
        self._idle_until: Optional[float] = None

    def readable(self) -> bool:
        return True

    def expect_next_request(self) -> None:
        self._idle_until = self._clock() + self._limits.idle_timeout

    def readinto(self, buffer) -> int:
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
                count = self._sock.recv_into(buffer)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            if idle and count:
                self._idle_until = None
                self.deadline = self._clock() + self._limits.request_timeout
            return count


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
    ) -> None:
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=128)
        self.address = self._sock.getsockname()[:2]
        self._app = app
        self._ssl = ssl_context
        self._limits = limits = limits or Limits()
        self._logger = logger or logging.getLogger(__name__)
        self._clock = clock
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._workers: set = set()
        self._workers_lock = threading.Lock()
        self.stats: Counter = Counter()
        self._stop = threading.Event()

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
        self._stop = stop
        try:
            while not stop.is_set():
                if tick is not None:
                    tick()
                if not self._slots.acquire(timeout=poll):
                    continue
                try:
                    ready, _, _ = select.select([self._sock], [], [], poll)
                    connection, peer = self._sock.accept() if ready else (None, None)
                except OSError as error:
                    self._logger.warning("action=accept_failed error=%r", error)
                    connection = None
                if connection is None:
                    self._slots.release()
                    continue
                _no_delay(connection)
                worker = threading.Thread(
                    target=self._serve_connection,
                    args=(connection, _normalise_peer(peer[0]), stop),
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

    def _serve_connection(self, raw: socket.socket, peer: str, stop: threading.Event) -> None:
        connection = raw
        self.stats["connections"] += 1
        try:
            reader = _DeadlineReader(raw, self._limits, stop, self._clock)
            if self._ssl is not None:
                tls = self._start_tls(raw, peer, reader.deadline)
                if tls is None:
                    return
                connection = tls
                reader = _DeadlineReader(connection, self._limits, stop, self._clock)
            stream = io.BufferedReader(reader, 65536)
            while self._serve_request(connection, stream, reader, peer):
                if stop.is_set():
                    break
                reader.expect_next_request()
        except _Deadline:
            self.stats["timed_out"] += 1
            self._logger.warning(
                "action=request_timed_out source_ip=%s timeout_s=%s: the client was cut off",
                peer,
                self._limits.request_timeout,
            )
            self._send(connection, Response.json(408, status="error", reason="request timeout"))
        except _Closed:
            pass
        except (OSError, ssl.SSLError) as error:
            self.stats["connection_errors"] += 1
            self._logger.info("action=connection_error source_ip=%s error=%r", peer, error)
        except Exception as error:  # never let one connection take the listener down
            self.stats["internal_errors"] += 1
            self._logger.exception("action=connection_failed source_ip=%s error=%r", peer, error)
        finally:
            try:
                _close(connection)
            finally:
                self._slots.release()
                with self._workers_lock:
                    self._workers.discard(threading.current_thread())

    def _start_tls(self, raw: socket.socket, peer: str, deadline: float):
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
                    Response.json(
                        400, status="error", reason="this port speaks HTTPS: use https://"
                    ),
                    keep_alive=False,
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

    def _serve_request(
        self, connection, stream: io.BufferedReader, reader: _DeadlineReader, peer: str
    ) -> bool:
        """Serve one request; True when the connection stays open for another."""
        line = stream.readline(_MAX_REQUEST_LINE + 1)
        if not line:
            raise _Closed("peer closed")
        try:
            request, keep_alive, length, chunked = self._read_head(line, stream, peer)
        except _BadRequest as error:
            self.stats[f"status_{error.status}"] += 1
            self._logger.warning(
                "action=request_rejected status=%d reason=%r source_ip=%s",
                error.status,
                error.reason,
                peer,
            )
            self._send(connection, Response.json(error.status, status="error", reason=error.reason))
            return False
        # while stopping, every answer closes its connection
        keep_alive = keep_alive and not self._stop.is_set()
        response = self._app.precheck(request)
        if response is None and length > self._limits.max_body_bytes:
            response = self._too_large(request)
        if response is not None:
            body_pending = chunked or length > 0
            keep_alive = keep_alive and not body_pending
            self._answer(connection, request, response, keep_alive)
            if body_pending:
                self._linger(connection)
            return keep_alive
        if request.headers.get("Expect", "").lower() == "100-continue":
            self._write(connection, b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self._read_chunked(stream) if chunked else self._read_exact(stream, length)
        if body is None:
            self._answer(connection, request, self._too_large(request), False)
            self._linger(connection)
            return False
        keep_alive = keep_alive and not self._stop.is_set()
        try:
            response = self._app.handle(request, body)
        except Exception as error:
            self.stats["internal_errors"] += 1
            self._logger.exception("action=handler_failed source_ip=%s error=%r", peer, error)
            response = Response.json(500, status="error", reason="internal error")
            keep_alive = False
        self._answer(connection, request, response, keep_alive)
        return keep_alive

    def _read_head(self, line: bytes, stream: io.BufferedReader, peer: str) -> tuple:
        if len(line) > _MAX_REQUEST_LINE:
            raise _BadRequest(400, "request line too long")
        parts = line.decode("latin-1").rstrip("\r\n").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "malformed request line")
        method, target, version = parts
        try:
            headers = http.client.parse_headers(stream)
        except http.client.HTTPException as error:
            raise _BadRequest(400, f"malformed headers: {error.__class__.__name__}") from None
        connection_tokens = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
        if version == "HTTP/1.1":
            keep_alive = "close" not in connection_tokens
        else:
            keep_alive = "keep-alive" in connection_tokens
        transfer = headers.get_all("Transfer-Encoding") or []
        lengths = {value.strip() for value in headers.get_all("Content-Length") or []}
        if transfer and lengths:
            # both framings at once is how requests are smuggled past proxies
            raise _BadRequest(400, "both Transfer-Encoding and Content-Length")
        chunked = False
        length = 0
        if transfer:
            if [t.strip().lower() for t in ",".join(transfer).split(",")] != ["chunked"]:
                raise _BadRequest(400, "unsupported Transfer-Encoding")
            chunked = True
        elif lengths:
            value = lengths.pop()
            if lengths or not value.isdigit():
                raise _BadRequest(400, "invalid Content-Length")
            length = int(value)
        path = urlsplit(target).path or "/"
        request = Request(method=method, path=path, headers=headers, peer=peer, version=version)
        return request, keep_alive, length, chunked

    def _too_large(self, request: Request) -> Response:
        return Response.json(
            413,
            status="error",
            reason=f"the body is larger than {self._limits.max_body_bytes} bytes",
        )

    def _read_exact(self, stream: io.BufferedReader, length: int) -> bytes:
        body = stream.read(length) if length else b""
        if len(body) != length:
            raise _Closed("body cut short")
        return body

    def _read_chunked(self, stream: io.BufferedReader) -> Optional[bytes]:
        """Decode a chunked body; None as soon as it grows past the limit."""
        limit = self._limits.max_body_bytes
        parts, total = [], 0
        while True:
            size_line = stream.readline(1024)
            if not size_line.endswith(b"\n"):
                raise _Closed("chunk size line cut short")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _Closed("malformed chunk size") from None
            if size == 0:
                while stream.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers: not used
                return b"".join(parts)
            total += size
            if total > limit:
                return None
            chunk = stream.read(size)
            if len(chunk) != size or stream.readline(3) not in (b"\r\n", b"\n"):
                raise _Closed("chunk cut short")
            parts.append(chunk)

    # -- answering -------------------------------------------------------------

    def _answer(self, connection, request: Request, response: Response, keep_alive: bool) -> None:
        self.stats[f"status_{response.status}"] += 1
        self._send(connection, response, keep_alive=keep_alive)

    def _send(self, connection, response: Response, keep_alive: bool = False) -> None:
        body = json.dumps(dict(response.body), separators=(",", ":")).encode("utf-8")
        lines = [
            f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Error')}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
            "Cache-Control: no-store",
        ]
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self._write(connection, head + body)
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
        """Read and discard an unread body for a bounded time, then let the caller close.

        Closing a socket with unread data makes the kernel send a reset, which can
        destroy the answer before the client reads it.
        """
        give_up = self._clock() + self._limits.linger_timeout
        budget = self._limits.linger_bytes
        buffer = bytearray(65536)
        try:
            while budget > 0:
                remaining = give_up - self._clock()
                if remaining <= 0:
                    return
                connection.settimeout(remaining)
                count = connection.recv_into(buffer)
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
