"""core.lean_http, the alert action's HTTP/1.1, against a loopback peer that sends
exactly the bytes a test gives it: framing, keep-alive, proxy tunnel, errors."""

from __future__ import annotations

import socket
import threading
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from mailsec.core.lean_http import Connection, ProtocolError, form_encode, split_uri
from mailsec.core.lean_http import quote as lean_quote


class Peer:
    """Accepts connections; for each request it reads, sends the next canned answer
    (bytes, or None to close the connection without answering)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while self.answers:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                buffer = b""
                while self.answers:
                    while b"\r\n\r\n" not in buffer:
                        data = conn.recv(65536)
                        if not data:
                            break
                        buffer += data
                    if b"\r\n\r\n" not in buffer:
                        break
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    while len(buffer) < length:
                        buffer += conn.recv(65536)
                    self.requests.append(head + b"\r\n\r\n" + buffer[:length])
                    buffer = buffer[length:]
                    answer = self.answers.pop(0)
                    if answer is None:
                        break
                    conn.sendall(answer)
                    if b"Connection: close" in answer.split(b"\r\n\r\n")[0]:
                        break

    def close(self):
        self.server.close()


def exchange(answer: bytes, **kwargs):
    peer = Peer([answer])
    connection = Connection("127.0.0.1", peer.port, timeout=5)
    try:
        connection.request("GET", "/x")
        return connection.response(**kwargs), connection
    finally:
        peer.close()


def test_content_length_and_keep_alive():
    peer = Peer([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                 b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno"])  # fmt: skip
    connection = Connection("127.0.0.1", peer.port, timeout=5)
    connection.request("POST", "/a", b"body", {"X-Test": "1"})
    first = connection.response("POST")
    sock = connection.sock
    connection.request("GET", "/b")
    second = connection.response()
    assert (first.status, first.body, first.will_close) == (200, b"hello", False)
    assert (second.status, second.reason, second.body) == (404, "Not Found", b"no")
    assert connection.sock is sock  # one connection for both
    head = peer.requests[0].split(b"\r\n")
    assert head[0] == b"POST /a HTTP/1.1"
    assert f"Host: 127.0.0.1:{peer.port}".encode() in head and b"Content-Length: 4" in head
    assert peer.requests[0].endswith(b"\r\n\r\nbody")
    peer.close()


def test_chunked_with_extensions_and_trailers():
    answer = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\n")  # fmt: skip
    response, connection = exchange(answer)
    assert response.body == b"wikipedia" and not response.will_close
    assert connection.sock is not None


def test_body_until_close_and_interim_answers():
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nConnection: close\r\n\r\nall of it"
    response, connection = exchange(answer)
    assert (response.status, response.body, response.will_close) == (200, b"all of it", True)
    assert connection.sock is None


def test_no_body_for_204():
    response, _ = exchange(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
    assert response.status == 204 and response.body == b""


def test_limit_keeps_the_first_bytes_and_closes():
    response, connection = exchange(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", limit=4
    )
    assert response.body == b"0123" and connection.sock is None


@pytest.mark.parametrize(
    "answer",
    [
        b"<html>not http</html>\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # then closed
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
    ],
)
def test_answers_that_are_not_http_are_protocol_errors(answer):
    peer = Peer([answer])  # the answer, then the connection closes
    connection = Connection("127.0.0.1", peer.port, timeout=5)
    connection.request("GET", "/x")
    with pytest.raises(ProtocolError):
        connection.response()
    assert isinstance(ProtocolError("x"), OSError)
    peer.close()


def test_closed_without_answer_is_a_reset():
    peer = Peer([None])
    connection = Connection("127.0.0.1", peer.port, timeout=5)
    connection.request("GET", "/x")
    with pytest.raises(ConnectionResetError):
        connection.response()
    peer.close()


def test_tunnel_through_a_proxy():
    peer = Peer([b"HTTP/1.1 200 Connection established\r\n\r\n",
                 b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])  # fmt: skip
    auth = {"Proxy-Authorization": "Basic abc"}
    connection = Connection("rm.example", 8443, timeout=5, proxy=("127.0.0.1", peer.port, auth))
    connection.request("GET", "/x")
    assert connection.response().body == b"ok"
    connect = peer.requests[0].split(b"\r\n")
    assert connect[0] == b"CONNECT rm.example:8443 HTTP/1.1"
    assert b"Proxy-Authorization: Basic abc" in connect
    assert b"Host: rm.example:8443" in peer.requests[1].split(b"\r\n")
    peer.close()


def test_refused_tunnel_is_a_connection_error():
    peer = Peer([b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"])
    connection = Connection("rm.example", 443, timeout=5, proxy=("127.0.0.1", peer.port, {}))
    with pytest.raises(OSError, match="407"):
        connection.connect()
    assert connection.sock is None
    peer.close()


@pytest.mark.parametrize("text", ["SplunkAlerts", "a b/c:d#e", "ünï €", "x+y=z&w", "~._-"])
def test_quote_and_form_encoding_as_urllib(text):
    assert lean_quote(text) == quote(text, safe="")
    assert parse_qs(form_encode({"k": text, "n": 1})) == {"k": [text], "n": ["1"]}


@pytest.mark.parametrize(
    "uri",
    ["https://127.0.0.1:8089", "https://splunk.example:8089/", "http://h", "https://[::1]:8089"],
)
def test_split_uri_as_urllib(uri):
    parts = urlsplit(uri)
    assert split_uri(uri) == (parts.scheme, parts.hostname, parts.port)
