"""Where UCC keeps the add-on's configuration, and what the settings tabs mean.

Shared by the solnlib reader (`adapters.config`, modular inputs) and the lean reader
(`adapters.lean_config`, the alert action, which must not import solnlib): both
name the same conf files and storage/passwords realms and read the Logging and
Proxy tabs the same way. Standard library only.
"""

from __future__ import annotations

from typing import Optional

from mailsec import APP_NAME
from mailsec.core.params import ConfigError

SETTINGS_CONF = "ta_mailsec_settings"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TRUE_FLAGS = ("1", "true")


def conf_for_tab(tab: str) -> str:
    return f"ta_mailsec_{tab}"


def conf_realm(conf: str) -> str:
    """The storage/passwords realm of a UCC conf file's encrypted fields."""
    return f"__REST_CREDENTIAL__#{APP_NAME}#configs/conf-{conf}"


def input_realm(input_type: str) -> str:
    return f"__REST_CREDENTIAL__#{APP_NAME}#data/inputs/{input_type}"


def addon_realm(name: str) -> str:
    """A realm of the add-on's own (not UCC's) storage/passwords entries."""
    return f"__REST_CREDENTIAL__#{APP_NAME}#{name}"


#: Every realm of this add-on starts so (UCC's and its own).
REALM_PREFIX = f"__REST_CREDENTIAL__#{APP_NAME}#"


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
