"""A hostile peer for the Sense listener: idle holders, slow-loris trickles, floods and
malformed framing, from any loopback source address (127.0.0.2 stands for a host
outside `allowed_sources`).

The attacks are the ones an internet-facing HTTP/1.1 server meets (OWASP "Slow HTTP
attacks"; RFC 9112 section 7.1 for the chunked grammar, section 6.3 for request
smuggling through conflicting framing) and the ones a review of the listener
reproduced (docs/sense_listener.md, "What the listener refuses"):

- chunk sizes that Python's `int(x, 16)` takes but RFC 9112's `1*HEXDIG` does not;
- Content-Length values that pass `str.isdigit()` but are not plain ASCII digits,
  or are too long for `int()`;
- a header block that never ends;
- TCP connections that never start a TLS handshake, and floods of them.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Optional

OUTSIDER = "127.0.0.2"  # a loopback source address outside allowed_sources "127.0.0.1/32"

# RFC 9112: chunk-size = 1*HEXDIG. Each of these is taken by int(x, 16).
MALFORMED_CHUNK_SIZES = ("-1", "+1f", "0x10", "1_0", " 10")
# RFC 9110: Content-Length = 1*DIGIT. Each passes str.isdigit() or int() but is not
# plain digits, or is too long to be a length.
MALFORMED_CONTENT_LENGTHS = ("²", "-1", "+5", "0x10", "1_0", "١٢", "5" * 5000)


def ready_answer(conn, timeout: float = 10.0) -> tuple:
    """(status, head bytes) of the answer the listener sends; (None, b"") when the
    connection ends without one."""
    conn.settimeout(timeout)
    data = b""
    with contextlib.suppress(OSError, ssl.SSLError):
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    return _status_of(data)


@dataclass
class HostilePeer:
    """Attacks one listener at 127.0.0.1:`port`. `tls_context`: speak TLS where an
    attack needs a request to reach the HTTP parser."""

    port: int
    tls_context: Optional[ssl.SSLContext] = None
    host: str = "127.0.0.1"
    held: list = field(default_factory=list)

    def connect(self, source: str = "127.0.0.1", tls: bool = True, timeout: float = 10.0):
        raw = socket.create_connection((self.host, self.port), timeout, (source, 0))
        if not tls or self.tls_context is None:
            return raw
        return self.tls_context.wrap_socket(raw, server_hostname="localhost")

    # -- holding and flooding ------------------------------------------------------

    def hold_idle(self, count: int, source: str = OUTSIDER) -> int:
        """Open `count` TCP connections that never send a byte (no TLS handshake);
        they stay open until `release()` or until the listener drops them. Returns
        how many reached the listener (connected, or reset by it while connecting)."""
        reached = 0
        for _ in range(count):
            try:
                self.held.append(self.connect(source, tls=False, timeout=10))
            except ConnectionResetError:
                pass  # the listener reset it before connect() returned here
            except OSError:
                continue
            reached += 1
        return reached

    def flood(self, count: int, source: str = OUTSIDER) -> int:
        """Connect, send garbage and drop, `count` times as fast as possible; how many
        connections the listener let through to a read (it answered or waited)."""
        served = 0
        for _ in range(count):
            with contextlib.suppress(OSError), self.connect(source, False, 2) as conn:
                conn.sendall(b"\x16\x03\x01" + b"\x00" * 64)
                conn.settimeout(0.2)
                try:
                    served += bool(conn.recv(1))
                except socket.timeout:
                    served += 1  # held open: the listener is reading it
        return served

    def release(self) -> None:
        for conn in self.held:
            with contextlib.suppress(OSError):
                conn.close()
        self.held.clear()

    def trickle(self, data: bytes, every: float = 0.05, source: str = "127.0.0.1") -> float:
        """Slow loris: send `data` one byte per `every` seconds; the seconds until the
        listener cut the connection off (or all was sent)."""
        started = time.monotonic()
        with contextlib.suppress(OSError, ssl.SSLError), self.connect(source) as conn:
            for byte in data:
                conn.sendall(bytes([byte]))
                time.sleep(every)
            ready_answer(conn, timeout=5)
        return time.monotonic() - started

    # -- malformed framing -----------------------------------------------------------

    def request_then_push(self, head: bytes, push_bytes: int = 0, line: bytes = b"A" * 1024):
        """Send `head` (whatever it holds), then keep pushing `push_bytes` more (`line`
        repeated) whatever the listener answers, reading its answer as it comes: the
        status, or None when no answer came. One thread: an SSL socket is not read
        and written from two threads at once."""
        conn = self.connect()
        received = b""
        try:
            conn.sendall(head)
            block, sent = line * max(1, (64 << 10) // len(line)), 0
            while sent < push_bytes:
                received += _read_ready(conn)
                conn.settimeout(2)
                try:
                    conn.sendall(block)
                except (OSError, ssl.SSLError):
                    break  # the listener closed the connection: pushing is over
                sent += len(block)
            received += _read_ready(conn)
            status, _ = _status_of(received) if b"\r\n\r\n" in received else ready_answer(conn)
        finally:
            with contextlib.suppress(OSError):
                conn.close()
        return status

    def endless_headers(self, head: bytes, push_bytes: int = 16 << 20) -> Optional[int]:
        """A header block that does not end: header lines after `head` until
        `push_bytes` were sent or the listener closed the connection."""
        return self.request_then_push(head, push_bytes, b"X-Padding: " + b"a" * 1000 + b"\r\n")


def _read_ready(conn) -> bytes:
    """What the listener has sent so far, without waiting."""
    data = b""
    with contextlib.suppress(OSError, ssl.SSLError):
        while select.select([conn], [], [], 0)[0] or getattr(conn, "pending", int)():
            conn.settimeout(0.05)
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def _status_of(data: bytes) -> tuple:
    head = data.partition(b"\r\n\r\n")[0]
    if not head.startswith(b"HTTP/1.1 "):
        return None, head
    return int(head.split(b" ", 2)[1]), head


def chunked_head(path: str, key_name: str, key_value: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\n{key_name}: {key_value}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()


def length_head(path: str, key_name: str, key_value: str, length: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\n{key_name}: {key_value}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()
