"""Google service-account OAuth: a signed JWT (RS256) exchanged for an access token.

The service account acts as the delegated admin (`sub` = admin_email) with the
scopes the calling service needs, which the domain must grant its client ID in
domain-wide delegation (docs/audit_export.md, docs/vault_export.md). RS256 is
signed with `cryptography` directly: google-auth would add several packages to
lib/ for one signature.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailsec.core.http import HttpClient
from mailsec.core.params import ConfigError

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_LIFETIME = 3600


class AuthError(Exception):
    pass


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class ServiceAccount:
    client_email: str
    private_key_id: str
    private_key: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def from_json(cls, text: str) -> ServiceAccount:
        field_name = "service_account_json"
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            raise ConfigError(
                field_name, "is not JSON: upload the key file as Google gave it"
            ) from None
        if not isinstance(data, dict) or data.get("type") != "service_account":
            raise ConfigError(
                field_name, 'is not a service account key file ("type": "service_account")'
            )
        for name in ("client_email", "private_key"):
            if not data.get(name):
                raise ConfigError(field_name, f"has no {name}: download a new JSON key")
        try:
            key = serialization.load_pem_private_key(data["private_key"].encode("utf-8"), None)
        except (ValueError, TypeError):
            raise ConfigError(field_name, "holds a private_key that is not a PEM RSA key") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError(field_name, "holds a private_key that is not an RSA key")
        return cls(data["client_email"], str(data.get("private_key_id") or ""), key)

    def assertion(self, subject: str, audience: str, now: float, scopes: Sequence[str]) -> str:
        header = {"alg": "RS256", "typ": "JWT"}
        if self.private_key_id:
            header["kid"] = self.private_key_id
        claims = {
            "iss": self.client_email,
            "sub": subject,
            "scope": " ".join(scopes),
            "aud": audience,
            "iat": int(now),
            "exp": int(now) + TOKEN_LIFETIME,
        }
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self.private_key.sign(
            signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
        return signing_input + "." + _b64url(signature)


class TokenProvider:
    """Access tokens for one (service account, admin, scopes); renewed 5 minutes early."""

    def __init__(
        self,
        http: HttpClient,
        account: ServiceAccount,
        subject: str,
        token_url: str,
        scopes: Sequence[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._account = account
        self._subject = subject
        self._token_url = token_url
        self._scopes = tuple(scopes)
        self._clock = clock
        self._token: Optional[str] = None
        self._expires = 0.0
        # a download thread may ask for the token while the run's thread does
        self._lock = threading.Lock()

    def token(self, http: Optional[HttpClient] = None) -> str:
        """The current token, renewed when due. `http`: the calling thread's own
        session for the renewal (a requests.Session is not shared across threads);
        by default the one given at construction."""
        with self._lock:
            now = self._clock()
            if self._token is None or now >= self._expires - 300:
                self._fetch(now, http or self._http)
            assert self._token is not None
            return self._token

    def invalidate(self, token: Optional[str] = None) -> None:
        """Forget the token (a 401): the next `token()` asks for a new one. With
        `token`, only if it is still the current one (another thread may have
        renewed it already)."""
        with self._lock:
            if token is None or token == self._token:
                self._token = None

    def _fetch(self, now: float, http: HttpClient) -> None:
        response = http.post(
            self._token_url,
            data={
                "grant_type": GRANT_TYPE,
                "assertion": self._account.assertion(
                    self._subject, self._token_url, now, self._scopes
                ),
            },
        )
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            error = body.get("error", "") if isinstance(body, dict) else ""
            described = body.get("error_description", "") if isinstance(body, dict) else ""
            hint = ""
            if error in ("unauthorized_client", "access_denied"):
                hint = (
                    " (grant the service account's client ID the scopes "
                    f"{', '.join(self._scopes)} in domain-wide delegation, and check admin_email)"
                )
            raise AuthError(
                f"token endpoint answered HTTP {response.status_code} {error} {described}".strip()
                + hint
            )
        self._token = str(body["access_token"])
        self._expires = now + float(body.get("expires_in", TOKEN_LIFETIME))
