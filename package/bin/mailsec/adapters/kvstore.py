"""Checkpoints and shared state in the KV store, through solnlib's KVStoreCheckpointer."""

from __future__ import annotations

from typing import Any, Optional

import json

from solnlib.modular_input.checkpointer import KVStoreCheckpointer
from splunklib import binding

from mailsec import APP_NAME
from mailsec.adapters.splunkd import Splunkd


def checkpoint_collection(input_type: str) -> str:
    """One collection per input type: input names are unique only within a type."""
    return f"ta_mailsec_{input_type}_checkpoints"


class KVStoreCheckpointStore:
    def __init__(self, splunkd: Splunkd, collection: str) -> None:
        self.collection = collection
        self._checkpointer = KVStoreCheckpointer(
            collection, splunkd.session_key, splunkd.app, owner="nobody", **splunkd.connection
        )

    @classmethod
    def inside_splunkd(cls, session_key: str, collection: str) -> KVStoreCheckpointStore:
        """For REST handlers, which run inside splunkd where solnlib can find the
        management port through Splunk's own Python package."""
        store = cls.__new__(cls)
        store.collection = collection
        store._checkpointer = KVStoreCheckpointer(collection, session_key, APP_NAME, owner="nobody")
        return store

    def get(self, key: str) -> Optional[Any]:
        return self._checkpointer.get(key)

    def save(self, key: str, state: Any) -> None:
        self._checkpointer.update(key, state)

    def delete(self, key: str) -> None:
        self._checkpointer.delete(key)

    def insert(self, key: str, state: Any) -> bool:
        """Create `key` only if absent (the KV store answers 409 for an existing
        key): the one atomic operation shared counters can be built on."""
        record = json.dumps({"_key": key, "state": json.dumps(state)})
        try:
            self._checkpointer._collection_data.insert(record)
        except binding.HTTPError as error:
            if error.status == 409:
                return False
            raise
        return True


def delete_input_checkpoint(splunkd: Splunkd, input_type: str, input_name: str) -> None:
    KVStoreCheckpointStore(splunkd, checkpoint_collection(input_type)).delete(input_name)
