"""Accounts, settings and input secrets, decrypted through solnlib.

UCC keeps every `encrypted: true` field in storage/passwords (the .conf holds
`******`); solnlib's ConfManager, given the realm, puts the real values back.
Values are strings, and an empty value is None.
"""

from __future__ import annotations

import json
from typing import Optional

from solnlib import conf_manager
from solnlib.credentials import CredentialManager, CredentialNotExistException

from mailsec import APP_NAME
from mailsec.adapters.splunkd import Splunkd
from mailsec.core.http import ProxyConfig
from mailsec.core.params import ConfigError

SETTINGS_CONF = "ta_mailsec_settings"
LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def conf_for_tab(tab: str) -> str:
    return f"ta_mailsec_{tab}"


def conf_realm(conf: str) -> str:
    return f"__REST_CREDENTIAL__#{APP_NAME}#configs/conf-{conf}"


def input_realm(input_type: str) -> str:
    return f"__REST_CREDENTIAL__#{APP_NAME}#data/inputs/{input_type}"


def _conf_file(splunkd: Splunkd, conf: str):
    manager = conf_manager.ConfManager(
        splunkd.session_key, splunkd.app, realm=conf_realm(conf), **splunkd.connection
    )
    return manager.get_conf(conf)


def load_account(splunkd: Splunkd, tab: str, name: str) -> dict:
    if not name:
        raise ConfigError("account", "no account is selected")
    try:
        conf = _conf_file(splunkd, conf_for_tab(tab))
        return dict(conf.get(name))
    except (conf_manager.ConfStanzaNotExistException, conf_manager.ConfManagerException):
        raise ConfigError(
            "account", f"no {tab} named {name!r}: add it on the Configuration page"
        ) from None


def load_settings(splunkd: Splunkd) -> dict:
    """The Proxy and Logging tabs (stanzas `proxy` and `logging`)."""
    try:
        conf = _conf_file(splunkd, SETTINGS_CONF)
        return {stanza: dict(values) for stanza, values in conf.get_all().items()}
    except conf_manager.ConfManagerException:
        return {}


def proxy_from_settings(settings: dict) -> Optional[ProxyConfig]:
    stanza = settings.get("proxy") or {}
    if str(stanza.get("proxy_enabled") or "0").lower() not in {"1", "true"}:
        return None
    host, port = stanza.get("proxy_url"), stanza.get("proxy_port")
    if not host or not port:
        raise ConfigError("proxy_url", "the proxy is enabled but its host or port is empty")
    return ProxyConfig(
        host=host,
        port=int(port),
        username=stanza.get("proxy_username"),
        password=stanza.get("proxy_password"),
        scheme=stanza.get("proxy_type") or "http",
    )


def log_level_from_settings(settings: dict) -> str:
    level = str((settings.get("logging") or {}).get("loglevel") or "INFO").upper()
    return level if level in LOG_LEVELS else "INFO"


def load_input_secrets(splunkd: Splunkd, input_type: str, input_name: str) -> dict:
    """An input's own encrypted fields: the XML configuration only shows `******`."""
    manager = CredentialManager(
        splunkd.session_key, splunkd.app, realm=input_realm(input_type), **splunkd.connection
    )
    try:
        return json.loads(manager.get_password(input_name))
    except CredentialNotExistException:
        return {}
