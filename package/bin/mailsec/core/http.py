"""The outbound HTTP client every service uses.

One `requests.Session` per run; TLS verification always on (a per-account CA bundle
replaces the default trust store, it never disables checking); connect and read
timeouts; retries with exponential backoff and jitter on connection errors and 5xx;
`Retry-After` honoured on 429 (a backoff when it is absent); the Proxy tab's proxy;
an optional client-side rate limiter.

`trust_env` is off: this machine (and many a Splunk host) sets REQUESTS_CA_BUNDLE,
which requests would otherwise let override the per-account CA bundle.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Callable, Optional
from urllib.parse import quote, urlsplit

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from mailsec import APP_NAME
from mailsec.core.files import private_dir
from mailsec.core.ratelimit import RateLimiter

USER_AGENT = f"{APP_NAME}/1.0"
PEM_CERT_MARKER = "-----BEGIN CERTIFICATE-----"


class IncompleteBody(IOError):
    """A response body ended before its Content-Length (urllib3 1.26 does not raise)."""

    def __init__(self, expected: int, received: int) -> None:
        super().__init__(f"response body cut off: {received} of {expected} bytes received")
        self.expected = expected
        self.received = received


@dataclass(frozen=True)
class ProxyConfig:
    host: str
    port: int
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    scheme: str = "http"

    def url(self) -> str:
        credentials = ""
        if self.username:
            credentials = quote(self.username, safe="")
            if self.password:
                credentials += ":" + quote(self.password, safe="")
            credentials += "@"
        return f"{self.scheme}://{credentials}{self.host}:{self.port}"

    def requests_proxies(self) -> dict[str, str]:
        return {"http": self.url(), "https": self.url()}


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    retry_statuses: frozenset = frozenset({500, 502, 503, 504})
    retry_429: bool = True
    max_retry_after: float = 900.0
    # False for requests that must not be repeated once they may have reached the
    # server (sending mail): then only failures before the request left are retried.
    retry_after_send_errors: bool = True


DEFAULT_RETRY = RetryPolicy()
NO_REPEAT_AFTER_SEND = RetryPolicy(
    max_attempts=3, retry_statuses=frozenset({503}), retry_after_send_errors=False
)


def is_connect_phase_error(exc: BaseException) -> bool:
    """True when the request cannot have reached the server's application."""
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError)):
        return True
    if isinstance(exc, requests.exceptions.ProxyError):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", None)
        return isinstance(reason, (NewConnectionError, ConnectTimeoutError))
    return False


def parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


class HttpClient:
    def __init__(
        self,
        *,
        ca_bundle_pem: Optional[str] = None,
        proxy: Optional[ProxyConfig] = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        rate_limiter: Optional[RateLimiter] = None,
        logger: Optional[logging.Logger] = None,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        client_cert: Optional[tuple[str, str]] = None,
    ) -> None:
        self.retry = retry
        self.timeout = (connect_timeout, read_timeout)
        self.rate_limiter = rate_limiter
        self.log = logger or logging.getLogger("ta_mailsec.http")
        self.stats: Counter = Counter()
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._rng = rng
        self._verify: object = True
        if ca_bundle_pem and ca_bundle_pem.strip():
            self._verify = ca_bundle_file(ca_bundle_pem)
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["User-Agent"] = USER_AGENT
        if proxy is not None:
            self.session.proxies.update(proxy.requests_proxies())
        if client_cert is not None:
            self.session.cert = client_cert

    def backoff(self, attempt: int) -> float:
        ceiling = min(self.retry.backoff_max, self.retry.backoff_base * 2 ** (attempt - 1))
        return ceiling * (0.5 + 0.5 * self._rng())

    def request(
        self, method: str, url: str, *, policy: Optional[RetryPolicy] = None, **kwargs
    ) -> requests.Response:
        """Send with retries; return the last response (the caller judges its status).

        Raises the last requests exception when connection errors outlast the policy.
        """
        policy = policy or self.retry
        if kwargs.pop("verify", True) is not True:
            raise ValueError("TLS verification cannot be turned off")
        kwargs.setdefault("timeout", self.timeout)
        where = _for_log(url)
        for attempt in range(1, policy.max_attempts + 1):
            if self.rate_limiter is not None:
                self.rate_limiter.acquire()
            self.stats["requests"] += 1
            try:
                response = self.session.request(method, url, verify=self._verify, **kwargs)
            except requests.exceptions.RequestException as exc:
                self.stats["connection_errors"] += 1
                retryable = isinstance(
                    exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
                ) and (policy.retry_after_send_errors or is_connect_phase_error(exc))
                if not retryable or attempt == policy.max_attempts:
                    raise
                delay = self.backoff(attempt)
                self.log.warning(
                    "HTTP %s %s failed (%s); retry %d/%d in %.1fs",
                    method, where, type(exc).__name__, attempt, policy.max_attempts - 1, delay,
                )  # fmt: skip
                self._sleep(delay)
                continue
            status = response.status_code
            if status == 429 and policy.retry_429:
                self.stats["status_429"] += 1
                waited = parse_retry_after(response.headers.get("Retry-After"), self._wall_clock())
                delay = min(waited, policy.max_retry_after) if waited is not None else None
            elif status in policy.retry_statuses:
                self.stats["status_5xx"] += 1
                delay = None
            else:
                return response
            if attempt == policy.max_attempts:
                return response
            if delay is None:
                delay = self.backoff(attempt)
            self.stats["retries"] += 1
            self.log.warning(
                "HTTP %s %s answered %d; retry %d/%d in %.1fs",
                method, where, status, attempt, policy.max_attempts - 1, delay,
            )  # fmt: skip
            response.close()
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, url: str, **kwargs) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs) -> requests.Response:
        return self.request("POST", url, **kwargs)

    def delete(self, url: str, **kwargs) -> requests.Response:
        return self.request("DELETE", url, **kwargs)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def ca_bundle_file(pem: str, directory: Optional[str] = None) -> str:
    """The path of a file holding this CA bundle, for requests' `verify=`.

    Named by the hash of its content and reused by every run: a CA bundle is public,
    and a per-run temporary file would be left behind by a process that is killed.
    The folder must be this user's own (a planted one could swap the trust store);
    an existing file is trusted only if its content is the bundle.
    """
    if PEM_CERT_MARKER not in pem:
        raise ValueError("the CA bundle is not PEM: it holds no '-----BEGIN CERTIFICATE-----'")
    suffix = f"_{os.getuid()}" if hasattr(os, "getuid") else ""
    folder = private_dir(
        directory or os.path.join(tempfile.gettempdir(), "ta_mailsec_ca_bundles" + suffix)
    )
    data = pem.encode("utf-8")
    path = os.path.join(folder, hashlib.sha256(data).hexdigest() + ".pem")
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as handle:
        if handle.read() == data:
            return path
    # written under an unpredictable name and renamed: a concurrent run never reads
    # half a file, and nothing can be made to follow a planted link
    partial = os.path.join(folder, f".{os.getpid()}.{os.urandom(8).hex()}.partial")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with open(os.open(partial, flags, 0o600), "wb") as handle:
        handle.write(data)
    os.replace(partial, path)
    return path


def iter_body(response: requests.Response, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Stream a response body, raising IncompleteBody when it ends short.

    Counts the bytes read off the wire (before any content decoding) against
    Content-Length, which urllib3 1.26 does not do itself.
    """
    declared = response.headers.get("Content-Length")
    yield from response.iter_content(chunk_size=chunk_size)
    if declared is not None and declared.isdigit():
        received = response.raw.tell()
        if received != int(declared):
            raise IncompleteBody(int(declared), received)


def _for_log(url: str) -> str:
    """Scheme, host and path only: queries may carry values that do not belong in logs."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
