"""HTTP/1.1 over one socket, for a process that must start fast.

The alert action is a new Python process per mail, run without bytecode caching:
each module it imports is compiled or initialised on every mail. `http.client`
alone (with the `email` package it imports) costs as much as a whole curl run
here, so the action speaks the small part of HTTP/1.1 it needs itself: one
request at a time, `Content-Length` or chunked or close-delimited answers,
keep-alive, and a tunnel through an HTTP proxy (`CONNECT`). Modular inputs use
`mailsec.core.http` (requests). Every failure is an OSError: `ProtocolError` for
an answer that is not HTTP.
"""

from __future__ import annotations

import socket

MAX_HEAD = 65536  # status line and headers
_NO_BODY_STATUS = (204, 304)
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
        self._buffer = b""

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
                self.sock = sock
                target = f"{self.host}:{self.port}"
                self._send_head("CONNECT", target, {"Host": target, **headers})
                status, reason, _headers = self._read_head()
                if status != 200:
                    raise OSError(f"Tunnel connection failed: {status} {reason}")
                if self._buffer:
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
        self.sock = sock

    def close(self) -> None:
        sock, self.sock, self._buffer = self.sock, None, b""
        if sock is not None:
            sock.close()

    def _send_head(self, method: str, target: str, headers: dict, body: bytes = b"") -> None:
        lines = [f"{method} {target} HTTP/1.1"]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def request(self, method: str, target: str, body: bytes = b"", headers=None) -> None:
        if self.sock is None:
            self.connect()
        fields = {"Host": self.authority, "Accept-Encoding": "identity"}
        fields.update(headers or {})
        if body or method in ("POST", "PUT"):
            fields["Content-Length"] = str(len(body))
        self._send_head(method, target, fields, body)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self._buffer += data
        return bool(data)

    def _read_head(self) -> tuple[int, str, dict]:
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end >= 0:
                head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
                status_line, *lines = head.decode("latin-1").split("\r\n")
                version, _, rest = status_line.partition(" ")
                code, _, reason = rest.partition(" ")
                if not version.startswith("HTTP/1.") or not code.isdigit():
                    raise ProtocolError(f"not an HTTP answer: {status_line[:80]!r}")
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                return int(code), reason, headers
            if len(self._buffer) > MAX_HEAD:
                raise ProtocolError("the answer's headers are too long")
            if not self._fill():
                if self._buffer:
                    raise ProtocolError("the connection closed in the answer's headers")
                raise ConnectionResetError("the connection closed without an answer")

    def _take(self, size: int, check) -> bytes:
        while len(self._buffer) < size:
            check()
            if not self._fill():
                raise ProtocolError("the connection closed before the answer's end")
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _line(self, check) -> bytes:
        while b"\r\n" not in self._buffer:
            check()
            if len(self._buffer) > MAX_HEAD or not self._fill():
                raise ProtocolError("bad chunked encoding")
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def response(self, method: str = "GET", limit=None, check=None) -> Response:
        """Read one answer (1xx skipped). `limit`: bytes of body kept at most (the
        connection is then closed); `check()` is called before each read and may
        raise, e.g. when a deadline has passed."""
        check = check or (lambda: None)
        while True:
            status, reason, headers = self._read_head()
            if status >= 200 or status == 101:
                break
        will_close = headers.get("connection", "").lower() == "close"
        if method == "HEAD" or status in _NO_BODY_STATUS or status < 200:
            return Response(status, reason, headers, b"", will_close)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts, size = [], 0
            while True:
                length = self._chunk_size(check)
                if length == 0:
                    while self._line(check):  # trailers, up to the empty line
                        pass
                    break
                parts.append(self._take(length, check))
                self._take(2, check)
                size += length
                if limit is not None and size >= limit:
                    will_close = True
                    break
            body = b"".join(parts)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise ProtocolError("bad Content-Length") from None
            if limit is not None and length > limit:
                body, will_close = self._take_some(limit, check), True
            else:
                body = self._take(length, check)
        else:  # the body ends with the connection
            body, will_close = self._take_some(limit, check), True
        if limit is not None:
            body = body[:limit]
        if will_close:
            self.close()
        return Response(status, reason, headers, body, will_close)

    def _chunk_size(self, check) -> int:
        text = self._line(check).split(b";")[0].strip()
        if not text or text.strip(b"0123456789abcdefABCDEF"):
            raise ProtocolError(f"bad chunk size {text[:20]!r}")
        return int(text, 16)

    def _take_some(self, limit, check) -> bytes:
        while limit is None or len(self._buffer) < limit:
            check()
            if not self._fill():
                break
        data, self._buffer = self._buffer, b""
        return data
