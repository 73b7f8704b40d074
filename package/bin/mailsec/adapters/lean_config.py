"""An account and the settings tabs, read from splunkd in a few REST calls.

Same result as `config.load_account` / `config.load_settings` (encrypted fields put
back from storage/passwords, empty values as None), for a process that must start
fast: solnlib imports all its modules and requests (about 0.25 s here, several
times a whole curl run), while splunklib's `binding` alone is a fraction of that.
An alert action starts a new process for every mail; modular inputs keep solnlib.

The storage/passwords layout is UCC's, written through solnlib's CredentialManager:
one JSON object of a stanza's encrypted fields, in 255-character chunks named
`<stanza>``splunk_cred_sep``<n>`, ended by an end-marker chunk.
"""

from __future__ import annotations

import json
import re
from typing import Optional
from urllib.parse import quote

from splunklib import binding

from mailsec import APP_NAME
from mailsec.adapters.splunkd import Splunkd
from mailsec.core.params import ConfigError

MASKED = "******"
CRED_SEP = "``splunk_cred_sep``"
CRED_END_MARK = (
    "``splunk_cred_sep``S``splunk_cred_sep``P``splunk_cred_sep``L``splunk_cred_sep``"
    "U``splunk_cred_sep``N``splunk_cred_sep``K``splunk_cred_sep``"
)
_CHUNK = re.compile(rf"^(.*){re.escape(CRED_SEP)}(\d+)$")
_META = ("eai:", "disabled")

# As in mailsec.adapters.config, which cannot be imported here: it imports solnlib.
SETTINGS_CONF = "ta_mailsec_settings"
LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def conf_for_tab(tab: str) -> str:
    return f"ta_mailsec_{tab}"


def conf_realm(conf: str) -> str:
    return f"__REST_CREDENTIAL__#{APP_NAME}#configs/conf-{conf}"


def log_level_from_settings(settings: dict) -> str:
    level = str((settings.get("logging") or {}).get("loglevel") or "INFO").upper()
    return level if level in LOG_LEVELS else "INFO"


class SplunkdError(Exception):
    """splunkd refused a call (bad session key, splunkd down, ...)."""


class LeanSplunkd:
    def __init__(self, splunkd: Splunkd, timeout: float = 30.0) -> None:
        connection = splunkd.connection
        self._context = binding.Context(
            handler=binding.handler(timeout=timeout),
            scheme=connection["scheme"],
            host=connection["host"],
            port=connection["port"],
            token=splunkd.session_key,
            app=splunkd.app,
            owner="nobody",
        )

    def _get(self, path: str, **query) -> Optional[dict]:
        """JSON of a GET, or None on 404."""
        try:
            response = self._context.get(path, output_mode="json", **query)
        except binding.HTTPError as error:
            if error.status == 404:
                return None
            raise SplunkdError(f"splunkd answered {error.status} to GET {path}") from None
        except OSError as error:
            raise SplunkdError(f"splunkd cannot be reached: {error}") from None
        return json.loads(response.body.read().decode("utf-8"))

    def stanzas(self, conf: str, stanza: Optional[str] = None) -> dict[str, dict]:
        path = f"configs/conf-{conf}" + (f"/{quote(stanza, safe='')}" if stanza else "")
        document = self._get(path, count=-1) if stanza is None else self._get(path)
        if document is None:
            return {}
        return {
            entry["name"]: {
                key: (None if value in ("", None) else value)
                for key, value in entry.get("content", {}).items()
                if not key.startswith(_META)
            }
            for entry in document.get("entry", [])
        }

    def secrets(self, realm: str) -> dict[str, dict]:
        """{stanza: {encrypted field: clear value}} for one UCC realm."""
        document = self._get("storage/passwords", count=-1, search=f"realm={realm}") or {}
        chunks: dict[str, dict[int, str]] = {}
        whole: dict[str, str] = {}
        for entry in document.get("entry", []):
            content = entry.get("content", {})
            if content.get("realm") != realm:
                continue
            username = content.get("username") or ""
            clear = content.get("clear_password") or ""
            match = _CHUNK.match(username)
            if match:
                chunks.setdefault(match.group(1), {})[int(match.group(2))] = clear
            else:  # written by an older solnlib in one piece
                whole[username] = clear
        for username, parts in chunks.items():
            joined = "".join(parts[i] for i in sorted(parts) if parts[i] != CRED_END_MARK)
            whole[username] = joined
        out = {}
        for username, text in whole.items():
            try:
                out[username] = json.loads(text)
            except ValueError:
                continue
        return out


def _merge(fields: dict, secrets: dict) -> dict:
    merged = dict(fields)
    for key, value in secrets.items():
        if merged.get(key) in (MASKED, None):
            merged[key] = value if value != "" else None
    return merged


def load_account(splunkd: LeanSplunkd, tab: str, name: str) -> dict:
    if not name:
        raise ConfigError("account", "no account is selected")
    conf = conf_for_tab(tab)
    stanza = splunkd.stanzas(conf, name).get(name)
    if stanza is None:
        raise ConfigError("account", f"no {tab} named {name!r}: add it on the Configuration page")
    if any(value == MASKED for value in stanza.values()):
        stanza = _merge(stanza, splunkd.secrets(conf_realm(conf)).get(name, {}))
    return stanza


def load_settings(splunkd: LeanSplunkd) -> dict:
    settings = splunkd.stanzas(SETTINGS_CONF)
    if any(value == MASKED for values in settings.values() for value in values.values()):
        secrets = splunkd.secrets(conf_realm(SETTINGS_CONF))
        settings = {
            name: _merge(values, secrets.get(name, {})) for name, values in settings.items()
        }
    return settings
