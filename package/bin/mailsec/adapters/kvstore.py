"""Checkpoints and shared state in the KV store, through solnlib's KVStoreCheckpointer."""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Optional

from solnlib import log
from solnlib.modular_input.checkpointer import KVStoreCheckpointer
from solnlib.splunkenv import get_splunkd_uri
from splunklib import binding

from mailsec.adapters.secret_cache import StoragePasswordsCache
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

    def get(self, key: str) -> Optional[Any]:
        return self._checkpointer.get(key)

    def save(self, key: str, state: Any) -> None:
        self._checkpointer.update(key, state)

    def delete(self, key: str) -> None:
        self._checkpointer.delete(key)

    def delete_range(self, low: str, high: str) -> None:
        """Delete every record with low <= _key < high, in one request."""
        if not low or not high or low >= high:
            raise ValueError("an empty key range")  # no query would delete every record
        query = json.dumps({"_key": {"$gte": low, "$lt": high}})
        self._checkpointer._collection_data.delete(query=query)

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


def delete_checkpoint_on_input_removal(
    session_key: str,
    input_type: str,
    input_name: str,
    logger: logging.Logger,
    forget_state: Optional[Callable[[Callable[[str], KVStoreCheckpointStore], str], None]] = None,
) -> bool:
    """Called by an input's REST handler inside splunkd before the input is removed:
    deletes its checkpoint, its cached access tokens and what its service keeps in
    other collections: `forget_state(open_store, input_name)`, given by the handler
    (the listener's messageIds), where `open_store(collection)` is a store over it.

    A failure is logged and does not block the removal: an input that cannot be
    deleted because the KV store is down would be worse than a stale checkpoint.
    """
    try:
        splunkd = Splunkd(get_splunkd_uri(session_key), session_key)
        delete_input_checkpoint(splunkd, input_type, input_name)
        # and the access tokens it cached: a new input with this name starts clean
        StoragePasswordsCache(splunkd, owner=f"{input_type}.{input_name}").clear()
        if forget_state is not None:
            forget_state(lambda collection: KVStoreCheckpointStore(splunkd, collection), input_name)
    except Exception as error:
        log.log_exception(
            logger, error, "CheckpointError",
            msg_before=f"Could not delete the checkpoint of {input_type}://{input_name}: ",
        )  # fmt: skip
        return False
    logger.info("Deleted the checkpoint of %s://%s", input_type, input_name)
    return True
