"""Parameters of the `rm_send_mail` alert action and of an `rm_account`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional

from mailsec.core import params as p

PARAMETERS = (
    "account",
    "to",
    "subject",
    "text",
    "html",
    "important",
    "include_results",
    "max_rows",
    "result_index",
)
INCLUDE_RESULTS = ("none", "table")


@dataclass(frozen=True)
class RmActionConfig:
    account: str
    to: str
    subject: Optional[str] = None
    text: Optional[str] = None
    html: Optional[str] = None
    important: bool = False
    include_results: str = "none"
    max_rows: int = 50
    result_index: str = "main"

    @classmethod
    def from_params(cls, params: Mapping[str, Optional[str]]) -> RmActionConfig:
        return cls(
            account=p.required(params, "account"),
            to=p.text(params, "to", ""),
            subject=p.text(params, "subject"),
            text=p.text(params, "text"),
            html=p.text(params, "html"),
            important=p.boolean(params, "important", False),
            include_results=p.choice(params, "include_results", INCLUDE_RESULTS, "none"),
            max_rows=p.integer(params, "max_rows", 50, minimum=1, maximum=10000),
            result_index=p.text(params, "result_index", "main"),
        )


@dataclass(frozen=True)
class RmAccount:
    hostname: str
    whitelist_name: str
    client_certificate: str = field(repr=False)  # base64 of the PKCS#12 file's bytes
    certificate_password: Optional[str] = field(default=None, repr=False)
    ca_bundle: Optional[str] = None

    @classmethod
    def from_fields(cls, fields: Mapping[str, Optional[str]]) -> RmAccount:
        hostname = p.required(fields, "hostname")
        if "/" in hostname or " " in hostname:
            raise p.ConfigError(
                "hostname", f"must be a host name (optionally :port), not {hostname!r}"
            )
        return cls(
            hostname=hostname,
            whitelist_name=p.required(fields, "whitelist_name"),
            client_certificate=p.required(fields, "client_certificate"),
            certificate_password=p.text(fields, "certificate_password"),
            ca_bundle=p.text(fields, "ca_bundle"),
        )
