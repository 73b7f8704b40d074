"""What the Logging and Proxy tabs of the Configuration page mean (docs/install.md),
for every process: the modular inputs (through the adapters) and the alert action.
Standard library only."""

from __future__ import annotations

from typing import Optional

from mailsec.core.params import ConfigError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TRUE_FLAGS = ("1", "true")


def log_level_from_settings(settings: dict) -> str:
    level = str((settings.get("logging") or {}).get("loglevel") or "INFO").upper()
    return level if level in LOG_LEVELS else "INFO"


def proxy_from_settings(settings: dict) -> Optional[dict]:
    """The Proxy tab as {host, port, username, password, scheme}, or None when off."""
    stanza = settings.get("proxy") or {}
    if str(stanza.get("proxy_enabled") or "0").lower() not in TRUE_FLAGS:
        return None
    host, port = stanza.get("proxy_url"), stanza.get("proxy_port")
    if not host or not port:
        raise ConfigError("proxy_url", "the proxy is enabled but its host or port is empty")
    try:
        port_number = int(port)
    except ValueError:
        raise ConfigError("proxy_port", f"must be a port number, not {port!r}") from None
    return {
        "host": host,
        "port": port_number,
        "username": stanza.get("proxy_username"),
        "password": stanza.get("proxy_password"),
        "scheme": stanza.get("proxy_type") or "http",
    }
