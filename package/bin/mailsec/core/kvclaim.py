"""Claiming a key of a KV-store collection shared by several inputs or processes.

The KV store has no atomic increment, but it refuses to insert a second record
with an existing key (HTTP 409): an input claims a key by inserting it with a
random nonce and re-reading it to confirm the record is its own. Two claimants
never both win one key. Used for audit_export's daily budget and vault_export's
in-progress slots (docs/audit_export.md, docs/vault_export.md).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any, Callable, Optional, Protocol


class ClaimStore(Protocol):
    def get(self, key: str) -> Optional[Any]: ...

    def insert(self, key: str, state: Any) -> bool:
        """Create `key` only if it does not exist; False when it already does."""
        ...


def new_claim(owner: str, purpose: str, at: float) -> dict:
    """The record a claimant inserts: who, why, when, and its nonce."""
    return {"owner": owner, "nonce": uuid.uuid4().hex, "purpose": purpose, "at": at}


def try_claim(store: ClaimStore, key: str, claim: dict) -> bool:
    """True when `key` is now this claimant's (inserted, and read back with its nonce)."""
    if not store.insert(key, claim):
        return False
    stored = store.get(key)
    return isinstance(stored, dict) and stored.get("nonce") == claim["nonce"]


class DomainClaims:
    """Claims of one domain's keys in a shared collection, for one owner (an input),
    at most `limit` of them and never more than the subclass's `CEILING`."""

    CEILING: int

    def __init__(
        self,
        store: ClaimStore,
        domain: str,
        limit: int,
        owner: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._domain = domain.lower()
        self.limit = min(limit, self.CEILING)
        self._owner = owner
        self._clock = clock

    def _claim_first(self, keys: Iterable[str], purpose: str) -> Optional[str]:
        """The first of `keys` this owner wins, tried in order; None when none is won."""
        claim = new_claim(self._owner, purpose, self._clock())
        for key in keys:
            if try_claim(self._store, key, claim):
                return key
        return None
