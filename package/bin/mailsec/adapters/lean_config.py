"""An account, the settings tabs and the add-on's own secrets, read from splunkd
over one keep-alive connection (mailsec.core.lean_http).

Same result as `config.load_account` / `config.load_settings` (encrypted fields put
back from storage/passwords, empty values as None), for a process that must start
fast: an alert action is a new process for every mail, and solnlib (with requests),
splunklib's `binding` or even http.client cost more to import than a whole curl
run. Modular inputs keep solnlib.

splunkd's management certificate is not verified, as splunklib and solnlib do not
verify it: it is self-signed by default, and the URI comes from splunkd itself.

The storage/passwords layout is UCC's (mailsec.adapters.stored_secrets); the add-on's
own entries (`set_secret`) are written the same way. Each value is asked for by realm
and user: the action reads the secrets of its own account, the proxy's and its
certificate cache, never the rest of the add-on's (docs/security.md).
"""

from __future__ import annotations

import json
import ssl
from typing import Optional

from mailsec import APP_NAME
from mailsec.adapters.settings import SETTINGS_CONF, conf_for_tab, conf_realm
from mailsec.adapters.stored_secrets import (
    CRED_SEP,
    belongs_to,
    chunked,
    reassemble,
    search_filter,
    split_chunk,
)
from mailsec.core.lean_http import Connection, form_encode, quote, split_uri
from mailsec.core.params import MASKED, ConfigError

_META = ("eai:", "disabled")


class SplunkdError(Exception):
    """splunkd refused a call (bad session key, splunkd down, ...)."""

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


class LeanSplunkd:
    def __init__(
        self, server_uri: str, session_key: str, app: str = APP_NAME, timeout: float = 30.0
    ) -> None:
        scheme, host, port = split_uri(server_uri)
        self._host = host or "127.0.0.1"
        self._port = port or 8089
        self._https = scheme == "https"
        self._headers = {"Authorization": f"Splunk {session_key}"}
        self._base = f"/servicesNS/nobody/{quote(app)}/"
        self._timeout = timeout
        self._connection: Optional[Connection] = None
        #: storage/passwords entries (content) already read, by (realm, user)
        self._read: dict[tuple[str, Optional[str]], list[dict]] = {}

    def _connect(self) -> Connection:
        if self._connection is None:
            context = None
            if self._https:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE  # as splunklib: see the module doc
            self._connection = Connection(
                self._host, self._port, context=context, timeout=self._timeout
            )
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def request(
        self, method: str, path: str, query: Optional[dict] = None, form: Optional[dict] = None
    ) -> tuple[int, Optional[dict]]:
        """(status, JSON answer) of one call. A GET on a kept-alive connection that
        splunkd closed in between is sent again once on a new connection."""
        target = self._base + path + "?" + form_encode({"output_mode": "json", **(query or {})})
        headers = dict(self._headers)
        body = b""
        if form is not None:
            body = form_encode(form).encode("ascii")
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        for attempt in (1, 2):
            connection = self._connect()
            reused = connection.sock is not None
            try:
                connection.request(method, target, body, headers)
                response = connection.response(method)
                break
            except OSError as error:
                self.close()
                if not (reused and attempt == 1 and method == "GET"):
                    raise SplunkdError(f"splunkd cannot be reached: {error}") from None
        if response.will_close:
            self.close()
        try:
            document = json.loads(response.body.decode("utf-8")) if response.body else None
        except ValueError:
            document = None
        return response.status, document

    def _get(self, path: str, **query) -> Optional[dict]:
        """JSON of a GET, or None on 404."""
        status, document = self.request("GET", path, query)
        if status == 404:
            return None
        if status >= 300:
            raise SplunkdError(f"splunkd answered {status} to GET {path}", status)
        return document or {}

    def stanzas(self, conf: str, stanza: Optional[str] = None) -> dict[str, dict]:
        path = f"configs/conf-{conf}" + (f"/{quote(stanza)}" if stanza else "")
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

    def _entries(self, realm: str, user: Optional[str] = None) -> list[dict]:
        """The storage/passwords entries (content) of one realm, of one user when
        given, read once."""
        key = (realm, user)
        if key not in self._read:
            search = search_filter(realm, user)
            document = self._get("storage/passwords", count=-1, search=search) or {}
            self._read[key] = [
                content
                for content in (entry.get("content", {}) for entry in document.get("entry", []))
                if belongs_to(content, realm, user)
            ]
        return self._read[key]

    def secret(self, realm: str, user: str) -> Optional[str]:
        """One clear value (chunks put together), or None."""
        return reassemble(self._entries(realm, user)).get((realm, user))

    def secrets(self, realm: str) -> dict[str, dict]:
        """{stanza: {encrypted field: clear value}} for one UCC realm."""
        out = {}
        for (_realm, user), text in reassemble(self._entries(realm)).items():
            value = _json_object(text)
            if value is not None:
                out[user] = value
        return out

    def set_secret(self, realm: str, user: str, value: str) -> None:
        """Store one value as solnlib's CredentialManager.set_password does (chunks
        and an end marker), then remove chunks left over from a longer older value."""
        existing = {
            index
            for content in self._entries(realm, user)
            for name, index in [split_chunk(content.get("username") or "")]
            if index is not None
        }
        chunks = chunked(user, value)
        for index, chunk_user, piece in chunks:
            if index in existing:
                self._post(_entry_path(realm, chunk_user), {"password": piece})
            else:
                self._post(
                    "storage/passwords", {"name": chunk_user, "password": piece, "realm": realm}
                )
        for index in sorted(existing - {index for index, _user, _piece in chunks}):
            self._delete(realm, user, f"{user}{CRED_SEP}{index}")
        self._forget(realm)  # read again when next asked

    def delete_secret(self, realm: str, user: str) -> None:
        for content in self._entries(realm, user):
            self._delete(realm, user, content["username"])
        self._forget(realm)

    def _delete(self, realm: str, user: str, entry_user: str) -> None:
        # splunkd answers a DELETE with the entries left in the collection, clear text
        # included: the filter narrows that answer to this value's own entries
        query = {"search": search_filter(realm, user)}
        self._call("DELETE", _entry_path(realm, entry_user), query=query)

    def _forget(self, realm: str) -> None:
        self._read = {key: value for key, value in self._read.items() if key[0] != realm}

    def secret_cache(self, realm: str) -> RealmCache:
        """One realm as a core.secrets.SecretCache (names are user names)."""
        return RealmCache(self, realm)

    def _post(self, path: str, form: dict) -> None:
        self._call("POST", path, form)

    def _call(
        self, method: str, path: str, form: Optional[dict] = None, query: Optional[dict] = None
    ) -> None:
        status, _document = self.request(method, path, query, form=form)
        if status >= 300:
            where = path.split("?")[0]
            raise SplunkdError(f"splunkd answered {status} to {method} {where}", status)


class RealmCache:
    def __init__(self, splunkd: LeanSplunkd, realm: str) -> None:
        self._splunkd = splunkd
        self._realm = realm

    def get(self, name: str) -> Optional[str]:
        return self._splunkd.secret(self._realm, name)

    def set(self, name: str, value: str) -> None:
        self._splunkd.set_secret(self._realm, name, value)

    def delete(self, name: str) -> None:
        self._splunkd.delete_secret(self._realm, name)


def _entry_path(realm: str, user: str) -> str:
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace(":", "\\:")

    return "storage/passwords/" + quote(f"{escape(realm)}:{escape(user)}:")


def _json_object(text: Optional[str]) -> Optional[dict]:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


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
        stanza = _merge(stanza, _json_object(splunkd.secret(conf_realm(conf), name)) or {})
    return stanza


def load_settings(splunkd: LeanSplunkd) -> dict:
    settings = splunkd.stanzas(SETTINGS_CONF)
    if any(value == MASKED for values in settings.values() for value in values.values()):
        secrets = splunkd.secrets(conf_realm(SETTINGS_CONF))
        settings = {
            name: _merge(values, secrets.get(name, {})) for name, values in settings.items()
        }
    return settings
