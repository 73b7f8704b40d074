"""HTTP/1.1 over one socket, for a process that must start fast.

The alert action is a new Python process per mail, run without bytecode caching:
each module it imports is compiled or initialised on every mail. `http.client`
alone (with the `email` package it imports) costs as much as a whole curl run
here, so the action uses this thin client: one request at a time, keep-alive, and
a tunnel through an HTTP proxy (`CONNECT`). The framing of the answers (status
line, headers, Content-Length, chunked or close-delimited bodies) is h11's, the
parser the Sense listener uses too: the add-on parses HTTP one way
(docs/sense_listener.md, "Why h11"). Modular inputs use `mailsec.core.http`
(requests). Every failure is an OSError: `ProtocolError` for an answer that is not
HTTP.
"""

from __future__ import annotations

import socket

import h11

MAX_HEAD = 65536  # status line and headers
# RFC 3986 unreserved characters: never percent-encoded (urllib.parse costs 2.5 ms
# to import, with ipaddress)
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def quote(text: str) -> str:
    """Percent-encode everything but unreserved characters (urllib's quote(safe=""))."""
    return "".join(
        chr(byte) if byte in _UNRESERVED else f"%{byte:02X}" for byte in text.encode("utf-8")
    )


def form_encode(fields: dict) -> str:
    """name=value&... as application/x-www-form-urlencoded and query strings."""
    return "&".join(f"{quote(str(name))}={quote(str(value))}" for name, value in fields.items())


def split_uri(uri: str) -> tuple:
    """(scheme, host, port or None) of `scheme://host[:port][/...]`; IPv6 hosts in
    brackets."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "https", uri
    authority = rest.split("/", 1)[0].rpartition("@")[2]
    if authority.startswith("["):
        host, _, tail = authority[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port = authority.partition(":")
    scheme = scheme.lower()
    if port and not port.isdigit():
        raise ValueError(f"bad port in {uri!r}")
    return scheme, host, int(port) if port else None


class ProtocolError(OSError):
    """The peer's answer is not HTTP/1.x, or it ended early."""


class Response:
    __slots__ = ("body", "headers", "reason", "status", "will_close")

    def __init__(self, status: int, reason: str, headers: dict, body: bytes, will_close: bool):
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case names
        self.body = body
        self.will_close = will_close


class Connection:
    """One HTTP connection; `context` (an ssl.SSLContext) makes it HTTPS, `proxy`
    ((host, port, extra CONNECT headers)) tunnels it through an HTTP proxy."""

    def __init__(self, host, port, *, context=None, timeout=30.0, proxy=None):
        self.host = host
        self.port = port
        self.context = context
        self.timeout = timeout
        self.proxy = proxy
        self.sock = None
        self._http = None

    @property
    def authority(self) -> str:
        return self.host if self.port in (80, 443) else f"{self.host}:{self.port}"

    def connect(self) -> None:
        if self.proxy is None:
            sock = socket.create_connection((self.host, self.port), self.timeout)
        else:
            proxy_host, proxy_port, headers = self.proxy
            sock = socket.create_connection((proxy_host, proxy_port), self.timeout)
            try:
                self.sock, self._http = sock, _client()
                target = f"{self.host}:{self.port}"
                fields = list({"Host": target, **headers}.items())
                self._send(h11.Request(method="CONNECT", target=target, headers=fields))
                status, reason, _headers = self._read_head(_no_check)
                if status != 200:
                    raise OSError(f"Tunnel connection failed: {status} {reason}")
                if self._http.trailing_data[0]:
                    raise ProtocolError("the proxy sent data after its CONNECT answer")
            except BaseException:
                sock.close()
                self.sock = None
                raise
        if self.context is not None:
            try:
                sock = self.context.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        self.sock, self._http = sock, _client()

    def close(self) -> None:
        sock, self.sock, self._http = self.sock, None, None
        if sock is not None:
            sock.close()

    def _send(self, *events) -> None:
        self.sock.sendall(b"".join(self._http.send(event) or b"" for event in events))

    def request(self, method: str, target: str, body: bytes = b"", headers=None) -> None:
        if self.sock is None:
            self.connect()
        fields = {"Host": self.authority, "Accept-Encoding": "identity"}
        fields.update(headers or {})
        if body or method in ("POST", "PUT"):
            fields["Content-Length"] = str(len(body))
        events = [h11.Request(method=method, target=target, headers=list(fields.items()))]
        if body:
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        self._send(*events)

    def _next_event(self, check, started: bool):
        """The next h11 event of the answer, reading as much as it needs; `started`:
        some of the answer has arrived already."""
        while True:
            try:
                event = self._http.next_event()
            except h11.RemoteProtocolError as error:
                # h11 may quote the answer's bytes: a short excerpt is enough
                raise ProtocolError(f"not an HTTP answer: {str(error)[:120]}") from None
            if event is not h11.NEED_DATA:
                return event
            check()
            data = self.sock.recv(65536)
            if not data and not started:
                raise ConnectionResetError("the connection closed without an answer")
            started = True
            self._http.receive_data(data)

    def _read_head(self, check) -> tuple:
        """(status, reason, headers) of the final answer; interim (1xx) ones skipped."""
        started = False
        while True:
            event = self._next_event(check, started)
            started = True
            if isinstance(event, h11.Response):
                headers = {name.decode("latin-1"): v.decode("latin-1") for name, v in event.headers}
                return event.status_code, event.reason.decode("latin-1"), headers

    def response(self, method: str = "GET", limit=None, check=None) -> Response:
        """Read one answer (1xx skipped; h11 knows a HEAD answer has no body, so
        `method` is kept for callers only). `limit`: bytes of body kept at most (the
        connection is then closed); `check()` is called before each read and may
        raise, e.g. when a deadline has passed."""
        check = check or _no_check
        status, reason, headers = self._read_head(check)
        parts, size, cut = [], 0, False
        while True:
            event = self._next_event(check, True)
            if isinstance(event, h11.EndOfMessage):
                break
            parts.append(event.data)
            size += len(event.data)
            if limit is not None and size >= limit:
                cut = True
                break
        body = b"".join(parts)
        if limit is not None:
            body = body[:limit]
        http = self._http
        will_close = cut or not (http.our_state is h11.DONE and http.their_state is h11.DONE)
        if will_close:
            self.close()
        else:
            http.start_next_cycle()
        return Response(status, reason, headers, body, will_close)


def _client():
    return h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)


def _no_check() -> None:
    pass
