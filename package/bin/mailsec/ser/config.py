"""Parameters of the `ser_report` and `ser_usage` inputs and of a `ser_account`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Optional

from mailsec.core import params as p

WINDOWS = ("5m", "15m", "1h", "1d")
VENDOR_REQUESTS_PER_MINUTE = 1000
# ser_usage (docs/ser_usage.md): the current API publishes no limit; 300 a minute is
# the cautious default, 10,000 the most the input accepts.
USAGE_REPORTS = ("relay_usage", "relay_failures", "delivery_failures", "overview")
USAGE_MAX_REQUESTS_PER_MINUTE = 10000


def _polling_params(
    params: Mapping[str, Optional[str]], revisit_days: int, rate: int, max_rate: int
) -> dict:
    """The parameters both SER inputs have, with the input's defaults."""
    return {
        "account": p.required(params, "account"),
        "start_date": p.instant(params, "start_date"),
        "revisit_days": p.integer(params, "revisit_days", revisit_days, minimum=0, maximum=7),
        "max_requests_per_minute": p.integer(
            params, "max_requests_per_minute", rate, minimum=1, maximum=max_rate
        ),
        "index": p.text(params, "index"),
    }


@dataclass(frozen=True)
class SerInputConfig:
    account: str
    start_date: Optional[datetime]
    window: timedelta
    settle: timedelta
    revisit_days: int
    max_requests_per_minute: int
    index: Optional[str] = None

    @classmethod
    def from_params(cls, params: Mapping[str, Optional[str]]) -> SerInputConfig:
        return cls(
            **_polling_params(params, 7, 900, VENDOR_REQUESTS_PER_MINUTE),
            window=p.duration(params, "window", "1h", allowed=WINDOWS),
            settle=timedelta(
                minutes=p.integer(params, "settle_minutes", 10, minimum=0, maximum=1440)
            ),
        )


@dataclass(frozen=True)
class SerUsageInputConfig:
    account: str
    start_date: Optional[datetime]
    reports: tuple[str, ...]
    settle: timedelta
    revisit_days: int
    max_requests_per_minute: int
    index: Optional[str] = None

    @classmethod
    def from_params(cls, params: Mapping[str, Optional[str]]) -> SerUsageInputConfig:
        # UCC's multiple select joins its values with "|"; a hand-written conf may use ","
        raw = (p.text(params, "reports") or "").replace("|", ",")
        chosen = p.csv_list({"reports": raw}, "reports") or list(USAGE_REPORTS)
        unknown = [name for name in chosen if name not in USAGE_REPORTS]
        if unknown:
            raise p.ConfigError(
                "reports",
                f"must be any of {', '.join(USAGE_REPORTS)}, not {', '.join(map(repr, unknown))}",
            )
        return cls(
            **_polling_params(params, 3, 300, USAGE_MAX_REQUESTS_PER_MINUTE),
            reports=tuple(name for name in USAGE_REPORTS if name in chosen),
            settle=timedelta(hours=p.integer(params, "settle_hours", 2, minimum=0, maximum=48)),
        )


@dataclass(frozen=True)
class SerAccount:
    client_id: str
    client_secret: str = field(repr=False)
    auth_url: str = "https://auth.proofpoint.com/v1/token"
    api_url: str = "https://ser-api.proofpoint.com"
    ca_bundle: Optional[str] = None
    reporting_url: str = "https://reporting.ser.proofpoint.com"

    @classmethod
    def from_fields(cls, fields: Mapping[str, Optional[str]]) -> SerAccount:
        return cls(
            client_id=p.required(fields, "client_id"),
            client_secret=p.secret(fields, "client_secret", required=True),
            auth_url=p.https_url(fields, "auth_url", cls.auth_url),
            api_url=p.https_url(fields, "api_url", cls.api_url).rstrip("/"),
            ca_bundle=p.text(fields, "ca_bundle"),
            reporting_url=p.https_url(fields, "reporting_url", cls.reporting_url).rstrip("/"),
        )
