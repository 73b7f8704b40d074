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
from mailsec.adapters.stored_secrets import (
    belongs_to,
    chunked,
    reassemble,
    search_filter,
    split_chunk,
)

TOKEN_CACHE_REALM = addon_realm("token_cache")


def _manager(splunkd: Splunkd, realm: str) -> CredentialManager:
    return CredentialManager(splunkd.session_key, splunkd.app, realm=realm, **splunkd.connection)


def _listed(manager: CredentialManager, realm: str, narrow: Optional[str] = None) -> list:
    """storage/passwords entities splunkd finds for `realm` and, when given, user names
    containing `narrow` (a substring filter: callers check the exact names)."""
    return manager.service.storage_passwords.list(count=-1, search=search_filter(realm, narrow))


def _stored(manager: CredentialManager, realm: str, user: str) -> list:
    """The entities (chunks) of one value."""
    return [e for e in _listed(manager, realm, user) if belongs_to(e.content, realm, user)]


def _read(manager: CredentialManager, realm: str, user: str) -> Optional[str]:
    values = reassemble(entity.content for entity in _stored(manager, realm, user))
    return values.get((realm, user))


def read_credential(splunkd: Splunkd, realm: str, user: str) -> Optional[str]:
    """One stored value (chunks put together), or None when there is none."""
    return _read(_manager(splunkd, realm), realm, user)


def _write(manager: CredentialManager, realm: str, user: str, value: str) -> None:
    """Store one value as solnlib's CredentialManager.set_password does (chunks and an
    end marker), updating the chunks that exist: solnlib would list the whole realm
    (every input's token) to find them. Chunks left over from a longer older value
    are removed."""
    existing = {}
    for entity in _stored(manager, realm, user):
        index = split_chunk(entity.content.get("username") or "")[1]
        if index is not None:
            existing[index] = entity
    for index, chunk_user, piece in chunked(user, value):
        if index in existing:
            existing.pop(index).update(password=piece)
        else:
            manager.service.storage_passwords.create(piece, chunk_user, realm)
    _delete(manager, list(existing.values()), search_filter(realm, user))


def _delete(manager: CredentialManager, entities: list, search: str) -> int:
    """Delete entities. splunkd answers a DELETE with the entries left in the
    collection, clear text included: `search` narrows that answer to the caller's own."""
    for entity in entities:
        manager.service.delete(entity.path, search=search)
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
        _write(self._manager, self._realm, self._user(name), value)

    def delete(self, name: str) -> None:
        user = self._user(name)
        entities = _stored(self._manager, self._realm, user)
        _delete(self._manager, entities, search_filter(self._realm, user))

    def clear(self) -> int:
        """Delete every value this owner cached (when its input is deleted)."""
        prefix = f"{self._owner}."
        entities = [
            entity
            for entity in _listed(self._manager, self._realm, prefix)
            if belongs_to(entity.content, self._realm)
            and split_chunk(entity.content.get("username") or "")[0].startswith(prefix)
        ]
        users = {split_chunk(entity.content["username"])[0] for entity in entities}
        _delete(self._manager, entities, search_filter(self._realm, prefix))
        return len(users)


def delete_credential(splunkd: Splunkd, realm: str, user: str) -> bool:
    """Delete one storage/passwords value (every chunk of it); False if there was none."""
    manager = _manager(splunkd, realm)
    return _delete(manager, _stored(manager, realm, user), search_filter(realm, user)) > 0
