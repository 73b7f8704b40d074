"""Proofpoint SER OAuth: the token both SER inputs use (docs/ser_report.md, docs/ser_usage.md).

`ser_report` and `ser_usage` share the token endpoint and the key and secret. The
token is reused until shortly before its `expires_in` (read from each answer, never
assumed) and kept across runs in encrypted storage; a 401 gets one new token and
one retry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Callable, Optional

import requests

from mailsec.core.http import HttpClient
from mailsec.core.secrets import SecretCache
from mailsec.ser.config import SerAccount

# Renew this long before the token expires (capped to a tenth of its lifetime, so a
# short-lived token is still reused).
TOKEN_RENEW_MARGIN = 300.0
VENDOR_MESSAGE_LIMIT = 500
TOKEN_CACHE_NAME = "ser_access_token"  # noqa: S105 (a cache entry name)


class SerApiError(Exception):
    """The API refused a request or answered something unreadable.

    `status` is the HTTP status (None for a malformed body); the message carries
    the vendor's own words, never the request's credentials.
    """

    def __init__(self, what: str, status: Optional[int], vendor_message: str) -> None:
        self.what = what
        self.status = status
        self.vendor_message = vendor_message
        shown = f"HTTP {status}" if status is not None else "malformed answer"
        super().__init__(f"{what}: {shown}: {vendor_message}")


def vendor_message(response: requests.Response) -> str:
    """The vendor's explanation from an error answer, short and on one line."""
    text = response.text or ""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("message", "error_description", "error", "detail", "errorMessage"):
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                text = value
                break
    text = " ".join(text.split())
    return text[:VENDOR_MESSAGE_LIMIT] or response.reason or "no message"


class SerTokenClient:
    def __init__(
        self,
        account: SerAccount,
        http: HttpClient,
        *,
        clock: Callable[[], float] = time.time,
        token_cache: Optional[SecretCache] = None,
        logger: Optional[logging.Logger] = None,
    ) -> None:
        self.account = account
        self.http = http
        self._clock = clock
        self._token: Optional[str] = None
        self._renew_at = 0.0
        self.token_requests = 0
        # splunkd starts a new process every interval: the cache (encrypted
        # storage/passwords) lets the next runs reuse the token until it expires.
        self._cache = token_cache
        self._log = logger or logging.getLogger("ta_mailsec.ser")
        self._issuer = hashlib.sha256(
            f"{account.auth_url}\n{account.client_id}".encode()
        ).hexdigest()[:16]
        self._load_cached_token()

    def _load_cached_token(self) -> None:
        if self._cache is None:
            return
        try:
            cached = json.loads(self._cache.get(TOKEN_CACHE_NAME) or "null")
        except Exception as error:  # a cache that cannot be read costs a token, no more
            self._log.warning("ser_token_cache action=read_failed error=%s", type(error).__name__)
            return
        if isinstance(cached, dict) and cached.get("issuer") == self._issuer:
            self._token = cached.get("access_token") or None
            self._renew_at = float(cached.get("renew_at") or 0.0)

    def _store_token(self) -> None:
        if self._cache is None:
            return
        value = {"issuer": self._issuer, "access_token": self._token, "renew_at": self._renew_at}
        try:
            self._cache.set(TOKEN_CACHE_NAME, json.dumps(value))
        except Exception as error:
            self._log.warning("ser_token_cache action=write_failed error=%s", type(error).__name__)

    def _fetch_token(self) -> str:
        self.token_requests += 1
        response = self.http.post(
            self.account.auth_url,
            data={
                "grant_type": "client_credentials",
                "client_id": self.account.client_id,
                "client_secret": self.account.client_secret,
            },
            headers={"Accept": "application/json", "Cache-Control": "no-cache"},
        )
        if response.status_code != 200:
            raise SerApiError("token request", response.status_code, vendor_message(response))
        try:
            answer = response.json()
            token = answer["access_token"]
            expires_in = float(answer.get("expires_in") or 0)
        except (ValueError, KeyError, TypeError):
            raise SerApiError("token request", None, "the answer holds no access_token") from None
        if not isinstance(token, str) or not token:
            raise SerApiError("token request", None, "the access_token is empty")
        margin = min(TOKEN_RENEW_MARGIN, expires_in / 10.0)
        self._token = token
        self._renew_at = self._clock() + max(0.0, expires_in - margin)
        self._store_token()
        return token

    def token(self) -> str:
        if self._token is None or self._clock() >= self._renew_at:
            return self._fetch_token()
        return self._token

    def authorized(self, method: str, url: str, *, accept: str, **kwargs) -> requests.Response:
        """Send with the bearer token; an expired or revoked token (401) gets one new
        token and one retry."""
        response = self._send(method, url, accept, **kwargs)
        if response.status_code == 401:
            response.close()
            self._token = None
            response = self._send(method, url, accept, **kwargs)
        return response

    def _send(self, method: str, url: str, accept: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}", "Accept": accept}
        return self.http.request(method, url, headers=headers, **kwargs)
