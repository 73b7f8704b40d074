"""Accounts, settings and input secrets, decrypted through solnlib.

UCC keeps every `encrypted: true` field in storage/passwords (the .conf holds
`******`); solnlib's ConfManager, given the realm, puts the real values back.
Values are strings, and an empty value is None.
"""

from __future__ import annotations

import json
from typing import Optional

from solnlib import conf_manager

from mailsec.adapters import settings as names
from mailsec.adapters.secret_cache import read_credential
from mailsec.adapters.settings import SETTINGS_CONF, conf_for_tab, conf_realm, input_realm
from mailsec.adapters.splunkd import Splunkd
from mailsec.core.http import ProxyConfig
from mailsec.core.params import ConfigError


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
    proxy = names.proxy_from_settings(settings)
    return ProxyConfig(**proxy) if proxy else None


def load_input_secrets(splunkd: Splunkd, input_type: str, input_name: str) -> dict:
    """An input's own encrypted fields: the XML configuration only shows `******`."""
    stored = read_credential(splunkd, input_realm(input_type), input_name)
    return json.loads(stored) if stored else {}
