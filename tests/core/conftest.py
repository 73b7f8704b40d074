"""A scripted HTTPS server for the HTTP core's tests: each request takes the next
scripted answer, so a test states exactly what the server does."""

from __future__ import annotations

import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from harness.certs import TestCA, TLSHTTPServer, server_ssl_context


class Answer:
    def __init__(self, status=200, body=b"ok", headers=None, delay=0.0, reset=False, short_by=0):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.delay = delay
        self.reset = reset  # hang up with a TCP reset instead of answering
        self.short_by = short_by  # send fewer body bytes than Content-Length says


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _answer(self) -> None:
        server = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with server.lock:
            server.requests.append((self.command, self.path, dict(self.headers), body))
            answer = server.script.pop(0) if server.script else Answer()
        if answer.delay:
            time.sleep(answer.delay)
        if answer.reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        if answer.short_by:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer.body[: len(answer.body) - answer.short_by])
        if answer.short_by:
            self.close_connection = True

    do_GET = do_POST = do_DELETE = _answer


@pytest.fixture(scope="session")
def test_ca():
    return TestCA.create()


@pytest.fixture
def scripted_server(test_ca):
    context = server_ssl_context(test_ca.issue_server())
    server = TLSHTTPServer(("127.0.0.1", 0), _Handler, context)
    server.script = []
    server.requests = []
    server.lock = threading.Lock()
    with server:
        yield server
