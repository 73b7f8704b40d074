"""Service-account OAuth for the Email Audit API: the shared JWT exchange
(mailsec/core/google_auth.py) with the Email Audit scope, which the domain must
grant the service account's client in domain-wide delegation."""

from __future__ import annotations

import time
from typing import Callable

from mailsec.core import google_auth
from mailsec.core.google_auth import AuthError, ServiceAccount
from mailsec.core.http import HttpClient

SCOPE = "https://apps-apis.google.com/a/feeds/compliance/audit/"

__all__ = ["SCOPE", "AuthError", "ServiceAccount", "TokenProvider"]


class TokenProvider(google_auth.TokenProvider):
    def __init__(
        self,
        http: HttpClient,
        account: ServiceAccount,
        subject: str,
        token_url: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(http, account, subject, token_url, (SCOPE,), clock=clock)
