"""Parameters of the `audit_export` input and of a `google_account`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Optional

from mailsec.core import params as p
from mailsec.core.google_account import TOKEN_URL, delegation_fields
from mailsec.core.mailbox import params as mailbox

PACKAGE_CONTENTS = ("FULL_MESSAGE", "HEADER_ONLY")
DOMAIN_DAILY_LIMIT = 100


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
    body_max_bytes: int = mailbox.BODY_MAX_BYTES
    index: Optional[str] = None

    @classmethod
    def from_params(cls, params: Mapping[str, Optional[str]]) -> AuditInputConfig:
        users = mailbox.users(params)
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
            users=users,
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
            **mailbox.body_params(params),
        )


@dataclass(frozen=True)
class GoogleAccount:
    domain: str
    admin_email: str
    service_account_json: str = field(repr=False)
    # None when the account serves vault_export only (docs/vault_export.md)
    pgp_public_key: Optional[str]
    pgp_private_key: Optional[str] = field(repr=False)
    pgp_passphrase: Optional[str] = field(default=None, repr=False)
    api_url: str = "https://apps-apis.google.com"
    token_url: str = TOKEN_URL
    ca_bundle: Optional[str] = None

    @classmethod
    def from_fields(cls, fields: Mapping[str, Optional[str]]) -> GoogleAccount:
        return cls(
            **delegation_fields(fields),
            pgp_public_key=p.text(fields, "pgp_public_key"),
            pgp_private_key=p.secret(fields, "pgp_private_key"),
            pgp_passphrase=p.secret(fields, "pgp_passphrase"),
            api_url=p.https_url(fields, "api_url", cls.api_url).rstrip("/"),
        )

    def check(self) -> None:
        """Save-time checks beyond the field formats (secrets equal to ****** are
        unchanged on edit and were checked when saved)."""
        from mailsec.audit.auth import ServiceAccount

        if self.service_account_json != p.MASKED:
            ServiceAccount.from_json(self.service_account_json)
        if self.pgp_public_key is None and self.pgp_private_key is None:
            return  # an account for vault_export only
        self.require_pgp()
        for name, marker in (
            ("pgp_public_key", "-----BEGIN PGP PUBLIC KEY BLOCK-----"),
            ("pgp_private_key", "-----BEGIN PGP PRIVATE KEY BLOCK-----"),
        ):
            value = getattr(self, name)
            if value != p.MASKED and marker not in value:
                raise p.ConfigError(
                    name, f"must be ASCII-armored ({marker}); export it with gpg --armor"
                )
        if not str(self.pgp_public_key).isascii():
            raise p.ConfigError("pgp_public_key", "must be US-ASCII text, as gpg --armor writes it")
        from mailsec.audit.keycheck import check_pgp_keys

        check_pgp_keys(self.pgp_public_key, self.pgp_private_key, self.pgp_passphrase)

    def require_pgp(self) -> None:
        """Both PGP keys, as audit_export needs them (Google encrypts its exports to the
        public key); vault_export does not use them."""
        for name in ("pgp_public_key", "pgp_private_key"):
            if getattr(self, name) is None:
                raise p.ConfigError(
                    name,
                    "is required by audit_export (Email Audit exports are encrypted); "
                    "give both PGP keys, or neither for an account used by vault_export only",
                )
