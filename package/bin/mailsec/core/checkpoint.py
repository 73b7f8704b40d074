"""Checkpoint stores: a key -> JSON-serialisable state mapping.

Services depend on this protocol only; the KV-store implementation lives in
`mailsec.adapters.kvstore`.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Optional, Protocol


class CheckpointStore(Protocol):
    def get(self, key: str) -> Optional[Any]: ...

    def save(self, key: str, state: Any) -> None: ...

    def delete(self, key: str) -> None: ...


class MemoryCheckpointStore:
    """In-memory store for service tests; copies like a real store (no aliasing)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Optional[Any]:
        return copy.deepcopy(self.data.get(key))

    def save(self, key: str, state: Any) -> None:
        # A real store holds JSON: refuse what it could not hold, and keep what it
        # would give back (a copy through JSON also costs a fraction of a deepcopy).
        self.data[key] = json.loads(json.dumps(state))

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def delete_range(self, low: str, high: str) -> int:
        """Delete every record with low <= key < high; how many went."""
        keys = [key for key in self.data if low <= key < high]
        for key in keys:
            del self.data[key]
        return len(keys)
