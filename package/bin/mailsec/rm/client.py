"""POST one mail to Release Manager with the client certificate, retrying only where
no mail can have been sent.

Built on `ssl` and mailsec.core.lean_http rather than the shared requests-based
HttpClient: an alert action is a new process per mail, and importing requests (or
even http.client) takes longer than a whole curl run (see the README,
"Benchmark"). The retry rule is the shared one, `NO_REPEAT_AFTER_SEND` of
mailsec.core.http: connection refused, TLS handshake failures (RM's refusal alerts
included) and 503 are retried; a read timeout or a connection lost after the request
left never is, since RM may have sent the mail.
"""

from __future__ import annotations

import base64
import json
import select
import socket
import ssl
import time
from typing import Callable, Optional

from mailsec.core.lean_http import Connection, quote

MAX_ATTEMPTS = 3  # as NO_REPEAT_AFTER_SEND
BACKOFF_BASE = 1.0
MAX_ANSWER_BYTES = 65536
VERDICT_WAIT = 0.1  # seconds a TLS 1.3 server has to accept or refuse our certificate
USER_AGENT = "TA_mailsec/1.0"


class Proxy:
    __slots__ = ("host", "password", "port", "username")

    def __init__(
        self, host: str, port: int, username: Optional[str] = None, password: Optional[str] = None
    ) -> None:
        self.host, self.port, self.username, self.password = host, port, username, password

    def __repr__(self) -> str:  # never the password
        return f"Proxy({self.host!r}, {self.port!r}, username={self.username!r})"


class SendResult:
    def __init__(self) -> None:
        self.code = ""
        self.attempts = 0
        self.latency_ms = 0
        self.http_status: Optional[int] = None
        self.detail: Optional[str] = None
        self.sent = False  # the request left this host at least once
        self.phases: dict = {}  # milliseconds of the last attempt


class _Retryable(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def make_ssl_context(ca_bundle_pem: Optional[str]) -> ssl.SSLContext:
    """A verifying client context: the account's CA bundle, else the bundled trust
    store. The caller loads the client certificate into it."""
    if ca_bundle_pem and ca_bundle_pem.strip():
        context = ssl.create_default_context(cadata=ca_bundle_pem)
    else:
        try:
            import certifi  # the trust store requests would use

            context = ssl.create_default_context(cafile=certifi.where())
        except ImportError:  # pragma: no cover - certifi ships with requests in lib/
            context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def split_host(hostname: str) -> tuple[str, int]:
    host, _, port = hostname.partition(":")
    return host, int(port) if port else 443


def await_certificate_verdict(sock: ssl.SSLSocket, wait: float = VERDICT_WAIT) -> None:
    """Raise if a TLS 1.3 server refuses the client certificate.

    In TLS 1.3 the client's side of the handshake ends before the server has
    checked the client certificate; its verdict (session tickets, or an alert and a
    closed connection) follows one round trip later. Waiting for it before sending
    tells "RM refused the certificate, no mail sent" apart from "the connection was
    lost after the mail was sent", which must not be retried.
    """
    if sock.version() != "TLSv1.3" or not select.select([sock], [], [], wait)[0]:
        return
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        if sock.recv(1) == b"":
            raise ConnectionResetError("the server closed the connection after the handshake")
    except ssl.SSLWantReadError:
        pass  # only session tickets: the certificate was accepted
    finally:
        sock.settimeout(timeout)


class RmClient:
    def __init__(
        self,
        hostname: str,
        context: ssl.SSLContext,
        *,
        proxy: Optional[Proxy] = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_base: float = BACKOFF_BASE,
        sleep: Callable[[float], None] = time.sleep,
        rng: Optional[Callable[[], float]] = None,
        clock: Callable[[], float] = time.monotonic,
        log: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.host, self.port = split_host(hostname)
        self.context = context
        self.proxy = proxy
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self._sleep = sleep
        self._rng = rng or jitter
        self._clock = clock
        self._log = log or (lambda message: None)

    def path(self, whitelist_name: str) -> str:
        return "/rest/mail/sendQueue/" + quote(whitelist_name)

    def send(self, whitelist_name: str, mail: dict) -> SendResult:
        body = json.dumps(mail, ensure_ascii=False).encode("utf-8")
        started = self._clock()
        result = SendResult()
        for attempt in range(1, self.max_attempts + 1):
            result.attempts = attempt
            try:
                self._attempt(self.path(whitelist_name), body, result)
                break
            except _Retryable as failure:
                result.code, result.detail = failure.code, str(failure)
                if attempt == self.max_attempts:
                    break
                delay = self.backoff_base * 2 ** (attempt - 1) * (0.5 + 0.5 * self._rng())
                self._log(
                    f"attempt {attempt}/{self.max_attempts} failed before any mail could "
                    f"be sent ({failure.code}: {failure}); retry in {delay:.1f}s"
                )
                self._sleep(delay)
        result.latency_ms = round((self._clock() - started) * 1000)
        return result

    def _connection(self) -> Connection:
        if self.proxy is None:
            return Connection(
                self.host, self.port, context=self.context, timeout=self.connect_timeout
            )
        headers = {}
        if self.proxy.username:
            token = f"{self.proxy.username}:{self.proxy.password or ''}".encode()
            headers["Proxy-Authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
        return Connection(
            self.host,
            self.port,
            context=self.context,
            timeout=self.connect_timeout,
            proxy=(self.proxy.host, self.proxy.port, headers),
        )

    def _attempt(self, path: str, body: bytes, result: SendResult) -> None:
        connection = self._connection()
        try:
            began = self._clock()
            try:
                connection.connect()
                await_certificate_verdict(connection.sock)
            except ssl.SSLCertVerificationError as error:
                # not retried: our own check of RM's certificate gives the same answer
                # each time, and nothing was sent to RM
                result.code, result.detail = "TLS_HANDSHAKE_FAILED", _reason(error)
                return
            except ssl.SSLError as error:
                # RM refused the handshake (a fatal alert such as handshake_failure) or
                # it broke off: no request was sent, so no mail can have left
                # (docs/rm_send_mail.md, "Behaviour on errors")
                raise _Retryable("TLS_HANDSHAKE_FAILED", _reason(error)) from None
            except OSError as error:
                raise _Retryable("CONNECTION_FAILED", _reason(error)) from None
            handshake = self._clock()
            result.phases["tls_handshake_ms"] = _ms(handshake - began)
            connection.sock.settimeout(self.read_timeout)
            deadline = handshake + self.read_timeout

            def within_deadline() -> None:
                # a per-read timeout alone does not stop a server that trickles bytes
                if self._clock() > deadline:
                    raise socket.timeout("the answer did not arrive within the read timeout")

            try:
                connection.request(
                    "POST",
                    path,
                    body=body,
                    headers={
                        "Content-Type": "application/json",
                        "Accept": "application/json",
                        "User-Agent": USER_AGENT,
                        "Connection": "close",
                    },
                )
                result.sent = True
                response = connection.response("POST", MAX_ANSWER_BYTES, within_deadline)
            except OSError as error:
                result.code, result.detail = "NO_ANSWER", _reason(error)
                return
            result.phases["request_ms"] = _ms(self._clock() - handshake)
            result.http_status = response.status
            answer = response.body
            code = _code_of(answer)
            if code is None and response.status == 503:
                raise _Retryable("SERVICE_UNAVAILABLE", "HTTP 503 Service Unavailable")
            if code is None:
                result.code = "UNEXPECTED_ANSWER"
                result.detail = f"HTTP {response.status}: {_snippet(answer)}"
                return
            result.code, result.detail = code, None
        finally:
            connection.close()


def jitter() -> float:
    import random  # only when a retry waits

    return random.random()  # noqa: S311  (backoff jitter, not cryptography)


def _code_of(answer: bytes) -> Optional[str]:
    try:
        document = json.loads(answer.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    code = document.get("code") if isinstance(document, dict) else None
    return str(code) if code not in (None, "") else None


def _snippet(answer: bytes, limit: int = 200) -> str:
    text = answer.decode("utf-8", "replace").strip().replace("\n", " ")
    return text[:limit] + ("..." if len(text) > limit else "") if text else "(empty body)"


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
