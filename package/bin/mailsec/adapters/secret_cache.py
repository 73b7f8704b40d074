"""SecretCache in splunkd's storage/passwords (encrypted by splunkd).

A missing entry is expected here (the first run of an input, a cache gone): it is
looked up by listing the realm narrowed to the user, never through solnlib's
`CredentialManager.get_password`/`delete_password`, whose `@retry` logs a traceback
on stderr for an absent entry and which splunkd records as errors
(docs/operations.md).
"""

from __future__ import annotations

from typing import Optional

from solnlib.credentials import CredentialManager

from mailsec.adapters.settings import addon_realm
from mailsec.adapters.splunkd import Splunkd
from mailsec.adapters.stored_secrets import belongs_to, reassemble, search_filter

TOKEN_CACHE_REALM = addon_realm("token_cache")


def _manager(splunkd: Splunkd, realm: str) -> CredentialManager:
    return CredentialManager(splunkd.session_key, splunkd.app, realm=realm, **splunkd.connection)


def _stored(manager: CredentialManager, realm: str, user: Optional[str] = None) -> list:
    """The storage/passwords entities of `realm` (of `user` only, when given)."""
    listed = manager.service.storage_passwords.list(count=-1, search=search_filter(realm, user))
    return [entity for entity in listed if belongs_to(entity.content, realm, user)]


def _read(manager: CredentialManager, realm: str, user: str) -> Optional[str]:
    values = reassemble(entity.content for entity in _stored(manager, realm, user))
    return values.get((realm, user))


def read_credential(splunkd: Splunkd, realm: str, user: str) -> Optional[str]:
    """One stored value (chunks put together), or None when there is none."""
    return _read(_manager(splunkd, realm), realm, user)


def _delete(manager: CredentialManager, realm: str, user: Optional[str]) -> int:
    entities = _stored(manager, realm, user)
    for entity in entities:
        entity.delete()
    return len(entities)


class StoragePasswordsCache:
    """Values stored under one realm, each name prefixed by its owner (an input)."""

    def __init__(self, splunkd: Splunkd, owner: str, realm: str = TOKEN_CACHE_REALM) -> None:
        self._owner = owner
        self._realm = realm
        self._manager = _manager(splunkd, realm)

    def _user(self, name: str) -> str:
        return f"{self._owner}.{name}"

    def get(self, name: str) -> Optional[str]:
        return _read(self._manager, self._realm, self._user(name))

    def set(self, name: str, value: str) -> None:
        self._manager.set_password(self._user(name), value)

    def delete(self, name: str) -> None:
        _delete(self._manager, self._realm, self._user(name))

    def clear(self) -> int:
        """Delete every value this owner cached (when its input is deleted)."""
        prefix = f"{self._owner}."
        users = {
            user
            for (_realm, user) in reassemble(
                entity.content for entity in _stored(self._manager, self._realm)
            )
            if user.startswith(prefix)
        }
        for user in users:
            _delete(self._manager, self._realm, user)
        return len(users)


def delete_credential(splunkd: Splunkd, realm: str, user: str) -> bool:
    """Delete one storage/passwords value (every chunk of it); False if there was none."""
    return _delete(_manager(splunkd, realm), realm, user) > 0
