"""Parameters of the `audit_export` input and of a `google_account`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Optional

from mailsec.core import params as p

PACKAGE_CONTENTS = ("FULL_MESSAGE", "HEADER_ONLY")
DOMAIN_DAILY_LIMIT = 100
# the local part of an address, or a whole address in the account's domain
_USER = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+(@[A-Za-z0-9.-]+)?$")


@dataclass(frozen=True)
class AuditInputConfig:
    account: str
    users: tuple
    search_query: Optional[str] = None
    include_deleted: bool = False
    package_content: str = "FULL_MESSAGE"
    export_every: timedelta = timedelta(days=1)
    first_begin_date: Optional[datetime] = None
    delete_after_download: bool = True
    daily_request_budget: int = DOMAIN_DAILY_LIMIT
    include_body: bool = False
    body_max_bytes: int = 32 * 1024
    index: Optional[str] = None

    @classmethod
    def from_params(cls, params: Mapping[str, Optional[str]]) -> AuditInputConfig:
        users = p.csv_list(params, "users")
        if not users:
            raise p.ConfigError(
                "users", "list at least one user name of the domain, comma-separated"
            )
        for user in users:
            if not _USER.match(user):
                raise p.ConfigError("users", f"{user!r} is not a user name of the domain")
        every = p.duration(params, "export_every", "1d")
        if every < timedelta(hours=1):
            raise p.ConfigError(
                "export_every", "must be at least 1h: each export costs one of 100 daily requests"
            )
        search_query = p.text(params, "search_query")
        include_deleted = p.boolean(params, "include_deleted", False)
        if include_deleted and search_query:
            # Google refuses every such export (docs/audit_export.md): each window
            # would burn budget slots and then be given up
            raise p.ConfigError(
                "include_deleted",
                "cannot be true together with search_query: Google runs no search query on "
                "an export that includes deleted messages; empty search_query or set "
                "include_deleted to false",
            )
        return cls(
            account=p.required(params, "account"),
            users=tuple(dict.fromkeys(users)),
            search_query=search_query,
            include_deleted=include_deleted,
            package_content=p.choice(params, "package_content", PACKAGE_CONTENTS, "FULL_MESSAGE"),
            export_every=every,
            first_begin_date=p.instant(params, "first_begin_date"),
            delete_after_download=p.boolean(params, "delete_after_download", True),
            daily_request_budget=p.integer(
                params,
                "daily_request_budget",
                DOMAIN_DAILY_LIMIT,
                minimum=1,
                maximum=DOMAIN_DAILY_LIMIT,
            ),
            include_body=p.boolean(params, "include_body", False),
            body_max_bytes=p.integer(
                params, "body_max_bytes", 32 * 1024, minimum=1, maximum=1 << 20
            ),
            index=p.text(params, "index"),
        )


@dataclass(frozen=True)
class GoogleAccount:
    domain: str
    admin_email: str
    service_account_json: str = field(repr=False)
    pgp_public_key: str
    pgp_private_key: str = field(repr=False)
    pgp_passphrase: Optional[str] = field(default=None, repr=False)
    api_url: str = "https://apps-apis.google.com"
    token_url: str = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)
    ca_bundle: Optional[str] = None

    @classmethod
    def from_fields(cls, fields: Mapping[str, Optional[str]]) -> GoogleAccount:
        admin = p.required(fields, "admin_email")
        if "@" not in admin:
            raise p.ConfigError("admin_email", "must be the delegated admin's e-mail address")
        return cls(
            domain=p.required(fields, "domain").lower(),
            admin_email=admin,
            service_account_json=p.required(fields, "service_account_json"),
            pgp_public_key=p.required(fields, "pgp_public_key"),
            pgp_private_key=p.required(fields, "pgp_private_key"),
            pgp_passphrase=p.secret(fields, "pgp_passphrase"),
            api_url=p.https_url(fields, "api_url", cls.api_url).rstrip("/"),
            token_url=p.https_url(fields, "token_url", cls.token_url),
            ca_bundle=p.text(fields, "ca_bundle"),
        )

    def check(self) -> None:
        """Save-time checks beyond the field formats (secrets equal to ****** are
        unchanged on edit and were checked when saved)."""
        from mailsec.audit.auth import ServiceAccount

        if self.service_account_json != p.MASKED:
            ServiceAccount.from_json(self.service_account_json)
        for name, marker in (
            ("pgp_public_key", "-----BEGIN PGP PUBLIC KEY BLOCK-----"),
            ("pgp_private_key", "-----BEGIN PGP PRIVATE KEY BLOCK-----"),
        ):
            value = getattr(self, name)
            if value != p.MASKED and marker not in value:
                raise p.ConfigError(
                    name, f"must be ASCII-armored ({marker}); export it with gpg --armor"
                )
        if not self.pgp_public_key.isascii():
            raise p.ConfigError("pgp_public_key", "must be US-ASCII text, as gpg --armor writes it")
        from mailsec.audit.keycheck import check_pgp_keys

        check_pgp_keys(self.pgp_public_key, self.pgp_private_key, self.pgp_passphrase)
