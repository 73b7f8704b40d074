"""A minimal HTTP CONNECT proxy on loopback, to prove outbound calls use the Proxy tab.

It records each CONNECT target and the Proxy-Authorization it came with, then
tunnels bytes both ways. Only loopback targets are allowed.
"""

from __future__ import annotations

import base64
import select
import socket
import threading
from socketserver import StreamRequestHandler, ThreadingTCPServer


class _ProxyHandler(StreamRequestHandler):
    timeout = 10

    def handle(self) -> None:
        request_line = self.rfile.readline(65537).decode("latin-1").strip()
        headers = {}
        while True:
            line = self.rfile.readline(65537).decode("latin-1")
            if line in ("\r\n", "\n", ""):
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        method, target, _ = [*request_line.split(" "), "", "", ""][:3]
        auth = headers.get("proxy-authorization", "")
        credentials = None
        if auth.lower().startswith("basic "):
            credentials = base64.b64decode(auth[6:]).decode("utf-8")
        self.server.seen.append((method, target, credentials))
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or host not in ("127.0.0.1", "localhost"):
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        if self.server.required_credentials and credentials != self.server.required_credentials:
            self.wfile.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
            )
            return
        upstream = socket.create_connection((host, int(port)), timeout=10)
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        self._tunnel(self.connection, upstream)

    @staticmethod
    def _tunnel(client: socket.socket, upstream: socket.socket) -> None:
        sockets = [client, upstream]
        try:
            while True:
                readable, _, errored = select.select(sockets, [], sockets, 10)
                if errored or not readable:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is client else client).sendall(data)
        finally:
            upstream.close()


class ConnectProxy(ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, required_credentials: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.seen: list[tuple[str, str, str | None]] = []
        self.required_credentials = required_credentials
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def __enter__(self) -> ConnectProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()
        self.server_close()
