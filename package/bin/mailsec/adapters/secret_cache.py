"""SecretCache in splunkd's storage/passwords (encrypted by splunkd)."""

from __future__ import annotations

import contextlib
from typing import Optional

from solnlib.credentials import CredentialManager, CredentialNotExistException

from mailsec.adapters.settings import addon_realm
from mailsec.adapters.splunkd import Splunkd

TOKEN_CACHE_REALM = addon_realm("token_cache")


class StoragePasswordsCache:
    """Values stored under one realm, each name prefixed by its owner (an input)."""

    def __init__(self, splunkd: Splunkd, owner: str, realm: str = TOKEN_CACHE_REALM) -> None:
        self._owner = owner
        self._realm = realm
        self._manager = CredentialManager(
            splunkd.session_key, splunkd.app, realm=realm, **splunkd.connection
        )

    def _user(self, name: str) -> str:
        return f"{self._owner}.{name}"

    def get(self, name: str) -> Optional[str]:
        try:
            return self._manager.get_password(self._user(name))
        except CredentialNotExistException:
            return None

    def set(self, name: str, value: str) -> None:
        self._manager.set_password(self._user(name), value)

    def delete(self, name: str) -> None:
        with contextlib.suppress(CredentialNotExistException):
            self._manager.delete_password(self._user(name))

    def clear(self) -> int:
        """Delete every value this owner cached (when its input is deleted)."""
        names = {
            entry["username"]
            for entry in self._manager.get_clear_passwords_in_realm()
            if entry.get("realm") == self._realm and entry["username"].startswith(f"{self._owner}.")
        }
        for username in names:
            with contextlib.suppress(CredentialNotExistException):
                self._manager.delete_password(username)
        return len(names)


def delete_credential(splunkd: Splunkd, realm: str, user: str) -> bool:
    """Delete one storage/passwords value (every chunk of it); False if there was none."""
    manager = CredentialManager(splunkd.session_key, splunkd.app, realm=realm, **splunkd.connection)
    try:
        manager.delete_password(user)
    except CredentialNotExistException:
        return False
    return True
