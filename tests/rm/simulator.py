"""A Release Manager REST mail interface, faithful to the vendor document (seed 003).

HTTPS with mutual TLS: the client certificate (issued by the tests' CA) identifies
its owner; its e-mail SAN is the sender address. A registry holds certificate
owners, the sender addresses each owns, their organisation's host names and REST
whitelist entries (name, IP, server host name). `POST /rest/mail/sendQueue/<name>`
answers `{"code": ...}` with HTTP 200, as the vendor's Java example reads it:

1. not JSON (Content-Type or body)            -> REQUEST_CONTENT_TYPE_MUST_BE_JSON
2. certificate owner does not own the sender  -> MISSING_ANY_PERMISSION
3. no whitelist entry for the sender          -> HAS_PERMISSION_BUT_MISSING_WHITELIST_ENTRY
4. no entry with the URL's whitelist name     -> ..._BUT_NONE_MATCH_NAME
5. no such entry for the client's IP          -> ..._MATCH_NAME_BUT_IP_MISMATCH
6. several such entries                       -> ..._MATCH_NAME_MATCH_IP_AMBIGUOUS
7. Host not the entry's server host name, or not a host name of the owner's
   organisation                               -> ..._BUT_SERVERHOSTNAME_MISMATCH
8. a recipient without "@" (or none at all)   -> RECIPIENTS_ADDRESS_MISS_AT_SIGN
9. a recipient with a capital letter          -> RECIPIENTS_ADDRESS_MUST_BE_LOWCASE
10. blank subject                             -> SUBJECT_IS_NOT_ALLOWED_TO_BE_EMPTY
11. blank text and blank HTML                 -> TEXT_OR_HTML_MUST_BE_SET
12. an undeliverable recipient                -> ERROR_CHECK_MAIL_SEND_TRIAL
13. otherwise the mail lands in `mailbox`     -> DONE

Injectable failures (`fail_next`), each for the next connection or request:
`reset_on_connect` (TCP reset before TLS), `refuse_handshake` (RM refuses the TLS
handshake: the ClientHello is answered with a fatal `handshake_failure` alert, level 2
description 40, as RFC 5246 section 7.2 and RFC 8446 section 6 define it; RM was seen
refusing handshakes so, as reported in the project's issue 10), `status_503` (503 before the body is
read), `hang` (body read, no answer until `release()`), `reset_after_request`,
`code:<ANY>` (an unknown or chosen code), `not_json` (an HTML error page).
`pause()` closes the listening socket (connection refused) and `resume()` opens
the same port again. `requests` logs every request; `connections` counts every
TCP connection, so a test can prove that nothing reached the server.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Optional

from cryptography import x509
from cryptography.x509.oid import NameOID

from harness.certs import Issued, TestCA, TLSHTTPServer, server_ssl_context

PATH_PREFIX = "/rest/mail/sendQueue/"
CONNECTION_FAILURES = {"reset_on_connect", "refuse_handshake"}
# a TLS record (content type 21 = alert, version 3.3, length 2): fatal, handshake_failure
HANDSHAKE_FAILURE_ALERT = bytes([21, 3, 3, 0, 2, 2, 40])
REQUEST_FAILURES = {"status_503", "hang", "reset_after_request", "not_json"}


@dataclass
class WhitelistEntry:
    name: str
    address: str  # the sender address the entry belongs to
    ip: str = "127.0.0.1"
    server_hostname: str = "localhost"


@dataclass
class Owner:
    common_name: str  # of the client certificate
    organisation: str
    addresses: set = field(default_factory=set)  # sender addresses with REST enabled


@dataclass
class Registry:
    owners: dict = field(default_factory=dict)  # common name -> Owner
    organisations: dict = field(default_factory=dict)  # name -> set of host names
    whitelist: list = field(default_factory=list)
    undeliverable: set = field(default_factory=set)

    def add_owner(self, common_name: str, organisation: str, *addresses: str) -> Owner:
        owner = Owner(common_name, organisation, set(addresses))
        self.owners[common_name] = owner
        self.organisations.setdefault(organisation, set())
        return owner


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict
    body: bytes
    client_ip: str
    certificate_cn: Optional[str]
    certificate_email: Optional[str]
    code: Optional[str] = None

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


def _identity(der: Optional[bytes]) -> tuple[Optional[str], Optional[str]]:
    if not der:
        return None, None
    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        emails = san.get_values_for_type(x509.RFC822Name)
    except x509.ExtensionNotFound:
        emails = []
    return (str(cns[0].value) if cns else None), (emails[0] if emails else None)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class _Server(TLSHTTPServer):
    simulator: RmSimulator

    def finish_request(self, request, client_address) -> None:  # type: ignore[override]
        sim = self.simulator
        with sim.lock:
            sim.connections += 1
            failure = sim._take(CONNECTION_FAILURES)
        if failure == "reset_on_connect":
            _reset(request)
            return
        if failure == "refuse_handshake":
            _refuse_handshake(request)
            return
        super().finish_request(request, client_address)


def _refuse_handshake(sock: socket.socket) -> None:
    sock.settimeout(5)
    try:
        sock.recv(65536)  # the ClientHello
        sock.sendall(HANDSHAKE_FAILURE_ALERT)
    except OSError:
        pass
    finally:
        sock.close()


def _reset(sock: socket.socket) -> None:
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # a real server answers in one segment, not after 40 ms
    server: _Server

    def log_message(self, format, *args) -> None:
        pass

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        head = (
            f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("ascii")
        self.wfile.write(head + body)
        self.close_connection = True

    def do_GET(self) -> None:
        self._answer(405, b'{"error":"method not allowed"}')

    def do_POST(self) -> None:
        sim = self.server.simulator
        cn, email = _identity(self.connection.getpeercert(binary_form=True))
        with sim.lock:
            failure = sim._take(REQUEST_FAILURES | {"code"})
        if failure == "status_503":  # refused before the body was read
            sim._record(self, b"", cn, email, None)
            self._answer(503, b"<html><body>503 Service Unavailable</body></html>", "text/html")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        record = sim._record(self, body, cn, email, None)
        if failure == "hang":
            sim._released.wait(timeout=30)
            return
        if failure == "reset_after_request":
            self.rfile.close()  # the file objects hold the socket open: close them first
            self.wfile.close()
            _reset(self.connection)
            self.close_connection = True
            return
        if failure == "not_json":
            self._answer(502, b"<html><body>Bad gateway</body></html>", "text/html")
            return
        if failure and failure.startswith("code:"):
            code = failure[len("code:") :]
        else:
            code = sim._judge(self, body, cn, email)
        record.code = code
        self._answer(200, json.dumps({"code": code}).encode("utf-8"))


class RmSimulator:
    def __init__(
        self,
        ca: TestCA,
        server_cert: Optional[Issued] = None,
        registry: Optional[Registry] = None,
        port: int = 0,
    ) -> None:
        self.ca = ca
        self.server_cert = server_cert or ca.issue_server(("localhost", "127.0.0.1"))
        self.registry = registry or Registry()
        self.lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self.mailbox: list[dict] = []
        self.connections = 0
        self._failures: deque = deque()
        self._released = threading.Event()
        self._port = port
        self._server: Optional[_Server] = None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> RmSimulator:
        context = server_ssl_context(self.server_cert, self.ca, require_client_cert=True)
        server = _Server(("127.0.0.1", self._port), _Handler, context, handshake_timeout=5)
        server.simulator = self
        self._port = server.port
        self._server = server.start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.stop()
            self._server = None

    pause = stop  # connection refused until resume()

    def resume(self) -> RmSimulator:
        self._released.clear()
        return self.start()

    def __enter__(self) -> RmSimulator:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def hostname(self) -> str:
        """The account's host name field for this simulator."""
        return f"localhost:{self._port}"

    # -- configuration -----------------------------------------------------------
    def fail_next(self, *failures: str) -> None:
        """Queue failures: each applies to the next connection/request it fits."""
        for failure in failures:
            kind = "code" if failure.startswith("code:") else failure
            if kind not in CONNECTION_FAILURES | REQUEST_FAILURES | {"code"}:
                raise ValueError(f"unknown failure {failure!r}")
        self._failures.extend(failures)

    def release(self) -> None:
        """Let hanging requests end (they then close without an answer)."""
        self._released.set()

    # -- internals ---------------------------------------------------------------
    def _take(self, kinds: set) -> Optional[str]:
        for failure in list(self._failures):
            kind = "code" if failure.startswith("code:") else failure
            if kind in kinds:
                self._failures.remove(failure)
                return failure
            break  # failures apply in order
        return None

    def _record(self, handler, body, cn, email, code) -> RecordedRequest:
        record = RecordedRequest(
            method=handler.command,
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            client_ip=handler.client_address[0],
            certificate_cn=cn,
            certificate_email=email,
            code=code,
        )
        with self.lock:
            self.requests.append(record)
        return record

    def _judge(self, handler, body: bytes, cn: Optional[str], email: Optional[str]) -> str:
        content_type = (handler.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type.lower() != "application/json":
            return "REQUEST_CONTENT_TYPE_MUST_BE_JSON"
        try:
            mail = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return "REQUEST_CONTENT_TYPE_MUST_BE_JSON"
        if not isinstance(mail, dict):
            return "REQUEST_CONTENT_TYPE_MUST_BE_JSON"
        if not handler.path.startswith(PATH_PREFIX):
            return "HAS_PERMISSION_HAS_WHITELIST_BUT_NONE_MATCH_NAME"
        from urllib.parse import unquote

        whitelist_name = unquote(handler.path[len(PATH_PREFIX) :])
        registry = self.registry
        owner = registry.owners.get(cn)
        if owner is None or email not in owner.addresses:
            return "MISSING_ANY_PERMISSION"
        entries = [e for e in registry.whitelist if e.address == email]
        if not entries:
            return "HAS_PERMISSION_BUT_MISSING_WHITELIST_ENTRY"
        named = [e for e in entries if e.name == whitelist_name]
        if not named:
            return "HAS_PERMISSION_HAS_WHITELIST_BUT_NONE_MATCH_NAME"
        for_ip = [e for e in named if e.ip == handler.client_address[0]]
        if not for_ip:
            return "HAS_PERMISSION_HAS_WHITELIST_MATCH_NAME_BUT_IP_MISMATCH"
        if len(for_ip) > 1:
            return "HAS_PERMISSION_HAS_WHITELIST_MATCH_NAME_MATCH_IP_AMBIGUOUS"
        host = (handler.headers.get("Host") or "").rsplit(":", 1)[0].lower()
        if host != for_ip[0].server_hostname or host not in registry.organisations.get(
            owner.organisation, set()
        ):
            return "HAS_PERMISSION_HAS_WHITELIST_MATCH_NAME_MATCH_IP_UNIQUE_BUT_SERVERHOSTNAME_MISMATCH"
        recipients = mail.get("toAddresses")
        if not isinstance(recipients, list) or not recipients:
            return "RECIPIENTS_ADDRESS_MISS_AT_SIGN"
        if any(not isinstance(r, str) or "@" not in r for r in recipients):
            return "RECIPIENTS_ADDRESS_MISS_AT_SIGN"
        if any(r != r.lower() for r in recipients):
            return "RECIPIENTS_ADDRESS_MUST_BE_LOWCASE"
        if _blank(mail.get("subject")):
            return "SUBJECT_IS_NOT_ALLOWED_TO_BE_EMPTY"
        if _blank(mail.get("text")) and _blank(mail.get("html")):
            return "TEXT_OR_HTML_MUST_BE_SET"
        if any(r in registry.undeliverable for r in recipients):
            return "ERROR_CHECK_MAIL_SEND_TRIAL"
        with self.lock:
            self.mailbox.append(dict(mail, sender=email, whitelist=whitelist_name))
        return "DONE"


def standard_setup(ca: TestCA, sender: str = "splunk-alerts@corp.example") -> tuple:
    """A registry where `client` may send: (registry, client certificate).

    The owner `splunk-rm` of organisation `corp` owns `sender`, whose whitelist
    entry `SplunkAlerts` is for 127.0.0.1 and server host name `localhost`.
    """
    registry = Registry()
    registry.add_owner("splunk-rm", "corp", sender)
    registry.organisations["corp"].add("localhost")
    registry.whitelist.append(WhitelistEntry("SplunkAlerts", sender))
    client = ca.issue_client("splunk-rm", email=sender)
    return registry, client
