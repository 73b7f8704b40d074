"""The splunkd stand-in's data (harness.splunkd): conf files, storage/passwords
and the KV store, with solnlib's chunking of credentials."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets as _secrets
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from solnlib.credentials import CredentialManager

#: What UCC writes into the .conf file in place of an encrypted field.
ENCRYPTED_PLACEHOLDER = "******"
# solnlib's chunking rules, taken from solnlib itself so the two cannot drift.
CRED_SEP = CredentialManager.SEP
CRED_END_MARK = CredentialManager.END_MARK
CRED_CHUNK = CredentialManager.SPLUNK_CRED_LEN_LIMIT


def credential_realm(app: str, endpoint: str) -> str:
    """The storage/passwords realm UCC uses for *endpoint*, for example
    ``credential_realm("TA_mailsec", "configs/conf-ta_mailsec_ser_account")``."""
    return f"__REST_CREDENTIAL__#{app}#{endpoint}"


def credential_chunks(username: str, password: str) -> list[tuple[str, str]]:
    """(username, password) pairs exactly as solnlib's ``CredentialManager.set_password``
    writes them: 255-character chunks under ``<user>``splunk_cred_sep``<n>`` (n from
    1), then one more entry holding the end marker."""
    pairs = []
    index = 1
    for start in range(0, len(password), CRED_CHUNK):
        pairs.append((f"{username}{CRED_SEP}{index}", password[start : start + CRED_CHUNK]))
        index += 1
    pairs.append((f"{username}{CRED_SEP}{index}", CRED_END_MARK))
    return pairs


def _escape_colon(text: str) -> str:
    return text.replace(":", "\\:")


def _conf_str(value: Any) -> str:
    """A value as splunkd stores it in a .conf file: always a string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


# ---------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------


@dataclass
class PasswordEntry:
    realm: str
    username: str
    clear_password: str
    encr_password: str

    @property
    def name(self) -> str:
        return f"{_escape_colon(self.realm)}:{_escape_colon(self.username)}:"


@dataclass
class KVCollection:
    config: dict[str, str] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)


class SplunkdState:
    """Everything a stand-in serves: conf files, storage/passwords, KV store.

    All access goes through :attr:`lock`; pass the same state to a new
    :class:`SplunkdStandIn` to keep the data over a simulated restart.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.confs: dict[str, dict[str, dict[str, str]]] = {}
        self.passwords: dict[str, PasswordEntry] = {}
        self.collections: dict[str, KVCollection] = {}
        # Key for the fake (irreversible) encr_password values.
        self._encr_key = _secrets.token_bytes(16)

    # -- passwords ---------------------------------------------------------

    def fake_encrypt(self, clear: str) -> str:
        digest = hmac.new(self._encr_key, clear.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"$7${digest}"

    def put_password(self, realm: str, username: str, clear: str) -> PasswordEntry:
        entry = PasswordEntry(realm, username, clear, self.fake_encrypt(clear))
        with self.lock:
            self.passwords[entry.name] = entry
        return entry

    def remove_credential(self, realm: str, username: str) -> int:
        """Remove ``username`` and all its chunks in ``realm``; return how many."""
        chunk = re.compile(re.escape(username + CRED_SEP) + r"\d+\Z")
        with self.lock:
            doomed = [
                name
                for name, e in self.passwords.items()
                if e.realm == realm and (e.username == username or chunk.match(e.username))
            ]
            for name in doomed:
                del self.passwords[name]
        return len(doomed)

    def store_credential(self, realm: str, username: str, password: str) -> None:
        """Store *password* chunked exactly as solnlib's CredentialManager does."""
        with self.lock:
            self.remove_credential(realm, username)
            for user, chunk in credential_chunks(username, password):
                self.put_password(realm, user, chunk)

    def read_credential(self, realm: str, username: str) -> Optional[str]:
        """Reassemble a chunked credential the way solnlib reads it (None if absent)."""
        pattern = re.compile(re.escape(username + CRED_SEP) + r"(\d+)\Z")
        chunks: dict[int, str] = {}
        plain = None
        with self.lock:
            for e in self.passwords.values():
                if e.realm != realm:
                    continue
                m = pattern.match(e.username)
                if m:
                    chunks[int(m.group(1))] = e.clear_password
                elif e.username == username:
                    plain = e.clear_password
        if not chunks:
            return plain
        out = []
        for index in sorted(chunks):
            if chunks[index] == CRED_END_MARK:
                break
            out.append(chunks[index])
        return "".join(out)

    # -- confs -------------------------------------------------------------

    def ensure_conf(self, conf: str) -> dict[str, dict[str, str]]:
        with self.lock:
            return self.confs.setdefault(conf, {})

    def stanza_view(self, conf: str, stanza: str) -> dict[str, str]:
        """A stanza as splunkd serves it: ``[default]`` values under its own."""
        with self.lock:
            stanzas = self.confs.get(conf, {})
            merged = dict(stanzas.get("default", {})) if stanza != "default" else {}
            merged.update(stanzas[stanza])
        return merged
