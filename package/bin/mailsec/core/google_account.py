"""The google_account fields every Google API of the add-on needs (audit_export and
vault_export read the same account): the domain, the delegated admin, the service
account's key, the token URL and the CA bundle. Kept free of HTTP and crypto imports:
save-time validation loads it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

from mailsec.core import params as p

TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)


def delegation_fields(fields: Mapping[str, Optional[str]]) -> dict:
    admin = p.required(fields, "admin_email")
    if "@" not in admin:
        raise p.ConfigError("admin_email", "must be the delegated admin's e-mail address")
    return {
        "domain": p.required(fields, "domain").lower(),
        "admin_email": admin,
        "service_account_json": p.required(fields, "service_account_json"),
        "token_url": p.https_url(fields, "token_url", TOKEN_URL),
        "ca_bundle": p.text(fields, "ca_bundle"),
    }
