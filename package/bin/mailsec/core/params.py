"""Parsing of input and account parameters, with errors that name the field and the fix.

Values reach us as strings, or None for an empty field (solnlib's ConfManager turns
"" into None; the modular-input XML leaves empty params out).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Optional

from mailsec.core.timeutil import parse_duration, parse_iso8601

# What UCC shows, and sends back from an edit form, for a secret that is not changed;
# also what a .conf file holds for each encrypted field.
MASKED = "******"
TRUE_VALUES = {"1", "true", "yes", "y", "t", "on"}
FALSE_VALUES = {"0", "false", "no", "n", "f", "off"}


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the field and the fix."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def text(
    params: Mapping[str, Optional[str]], name: str, default: Optional[str] = None
) -> Optional[str]:
    value = params.get(name)
    if value is None or str(value).strip() == "":
        return default
    return str(value).strip()


def secret(
    params: Mapping[str, Optional[str]], name: str, *, required: bool = False
) -> Optional[str]:
    """A password or key exactly as typed: leading or trailing spaces can be part of it."""
    value = params.get(name)
    if value is None or value == "" or not str(value).strip():
        if required:
            raise ConfigError(name, "is required")
        return None
    return str(value)


def required(params: Mapping[str, Optional[str]], name: str) -> str:
    value = text(params, name)
    if value is None:
        raise ConfigError(name, "is required")
    return value


def integer(
    params: Mapping[str, Optional[str]],
    name: str,
    default: int,
    *,
    minimum: Optional[int] = None,
    maximum: Optional[int] = None,
) -> int:
    raw = text(params, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"must be a whole number, not {raw!r}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        raise ConfigError(name, f"must be {bounds}, not {value}")
    return value


def boolean(params: Mapping[str, Optional[str]], name: str, default: bool) -> bool:
    raw = text(params, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in TRUE_VALUES:
        return True
    if lowered in FALSE_VALUES:
        return False
    raise ConfigError(name, f"must be true or false, not {raw!r}")


def choice(
    params: Mapping[str, Optional[str]], name: str, allowed: Iterable[str], default: str
) -> str:
    allowed = list(allowed)
    raw = text(params, name, default)
    if raw not in allowed:
        raise ConfigError(name, f"must be one of {', '.join(allowed)}, not {raw!r}")
    return raw


def instant(params: Mapping[str, Optional[str]], name: str) -> Optional[datetime]:
    raw = text(params, name)
    if raw is None:
        return None
    try:
        return parse_iso8601(raw)
    except ValueError:
        raise ConfigError(
            name,
            "must be a UTC date or date-time such as 2024-05-01 or 2024-05-01T08:00:00Z, "
            f"not {raw!r}",
        ) from None


def duration(
    params: Mapping[str, Optional[str]],
    name: str,
    default: str,
    allowed: Optional[Iterable[str]] = None,
) -> timedelta:
    raw = text(params, name, default)
    if allowed is not None and raw not in set(allowed):
        raise ConfigError(name, f"must be one of {', '.join(allowed)}, not {raw!r}")
    try:
        return parse_duration(raw)
    except ValueError:
        raise ConfigError(name, f"must be a duration such as 1h or 1d, not {raw!r}") from None


def cidr_list(params: Mapping[str, Optional[str]], name: str) -> list:
    raw = text(params, name)
    if raw is None:
        return []
    import ipaddress  # here: the alert action, a process per mail, never needs it

    networks = []
    for item in raw.replace(";", ",").replace(" ", ",").split(","):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(
                name, f"{item!r} is not an IP address or CIDR range such as 10.0.0.0/8"
            ) from None
    return networks


def csv_list(params: Mapping[str, Optional[str]], name: str) -> list[str]:
    raw = text(params, name)
    if raw is None:
        return []
    return [item.strip() for item in raw.split(",") if item.strip()]


def port(params: Mapping[str, Optional[str]], name: str) -> int:
    if text(params, name) is None:
        raise ConfigError(name, "is required: a TCP port from 1 to 65535")
    return integer(params, name, 0, minimum=1, maximum=65535)


def https_url(params: Mapping[str, Optional[str]], name: str, default: str) -> str:
    value = text(params, name, default)
    if not value.lower().startswith("https://") or len(value) <= len("https://"):
        raise ConfigError(name, f"must be an https:// URL (TLS is always verified), not {value!r}")
    return value
