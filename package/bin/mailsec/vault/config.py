"""Parameters of the `vault_export` input, and what it reads of a `google_account`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Optional

from mailsec.core import params as p
from mailsec.core.google_account import TOKEN_URL, delegation_fields
from mailsec.core.mailbox import params as mailbox

DATA_SCOPES = ("ALL_DATA", "HELD_DATA", "UNPROCESSED_DATA")
REGIONS = ("ANY", "US", "EUROPE")
ORG_IN_PROGRESS_LIMIT = 20  # developers.google.com/workspace/vault/limits
_MATTER_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@dataclass(frozen=True)
class VaultInputConfig:
    account: str
    users: tuple
    matter_id: Optional[str] = None
    terms: Optional[str] = None
    data_scope: str = "ALL_DATA"
    exclude_drafts: bool = True
    region: str = "ANY"
    export_every_days: int = 1
    first_begin_date: Optional[datetime] = None
    max_exports_in_progress: int = 5
    delete_after_download: bool = True
    include_body: bool = False
    body_max_bytes: int = mailbox.BODY_MAX_BYTES
    index: Optional[str] = None

    @property
    def export_every(self) -> timedelta:
        return timedelta(days=self.export_every_days)

    @classmethod
    def from_params(cls, params: Mapping[str, Optional[str]]) -> VaultInputConfig:
        users = mailbox.users(params)
        every = p.duration(params, "export_every", "1d")
        if every < timedelta(days=1) or every.total_seconds() % 86400:
            raise p.ConfigError(
                "export_every",
                "must be a whole number of days such as 1d or 7d: Vault rounds an "
                "export's start and end to midnight",
            )
        matter_id = p.text(params, "matter_id")
        if matter_id is not None and not _MATTER_ID.match(matter_id):
            raise p.ConfigError(
                "matter_id", "must be a Vault matter ID (letters, digits, - and _), or empty"
            )
        first = p.instant(params, "first_begin_date")
        if first is not None and first != first.replace(hour=0, minute=0, second=0, microsecond=0):
            raise p.ConfigError(
                "first_begin_date", "must be a date (midnight UTC): Vault exports whole days"
            )
        return cls(
            account=p.required(params, "account"),
            users=users,
            matter_id=matter_id,
            terms=p.text(params, "terms"),
            data_scope=p.choice(params, "data_scope", DATA_SCOPES, "ALL_DATA"),
            exclude_drafts=p.boolean(params, "exclude_drafts", True),
            region=p.choice(params, "region", REGIONS, "ANY"),
            export_every_days=int(every.total_seconds() // 86400),
            first_begin_date=first,
            max_exports_in_progress=p.integer(
                params, "max_exports_in_progress", 5, minimum=1, maximum=ORG_IN_PROGRESS_LIMIT
            ),
            delete_after_download=p.boolean(params, "delete_after_download", True),
            **mailbox.body_params(params),
        )


@dataclass(frozen=True)
class VaultAccount:
    """The fields of a google_account that Vault uses (not the PGP keys)."""

    domain: str
    admin_email: str
    service_account_json: str = field(repr=False)
    vault_url: str = "https://vault.googleapis.com"
    storage_url: str = "https://storage.googleapis.com"
    token_url: str = TOKEN_URL
    ca_bundle: Optional[str] = None

    @classmethod
    def from_fields(cls, fields: Mapping[str, Optional[str]]) -> VaultAccount:
        return cls(
            **delegation_fields(fields),
            vault_url=p.https_url(fields, "vault_url", cls.vault_url).rstrip("/"),
            storage_url=p.https_url(fields, "storage_url", cls.storage_url).rstrip("/"),
        )
