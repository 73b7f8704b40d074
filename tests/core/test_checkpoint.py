"""The in-memory checkpoint store that service tests and benchmarks use: it keeps
what a real store (JSON in the KV store) would keep and give back."""

from __future__ import annotations

import pytest

from mailsec.core.checkpoint import MemoryCheckpointStore


def test_a_saved_state_is_given_back_as_json_would_give_it_never_aliased():
    store = MemoryCheckpointStore()
    state = {"a": 1, "when": "2024-05-01T00:00:00Z", "seen": ("x", "y"), "n": {"k": [1, 2]}}
    store.save("key", state)
    state["a"] = 2
    state["n"]["k"].append(3)  # changing the caller's copy changes nothing stored
    assert store.get("key") == {"a": 1, "when": "2024-05-01T00:00:00Z", "seen": ["x", "y"],
                                "n": {"k": [1, 2]}}  # fmt: skip
    given = store.get("key")
    given["n"]["k"].clear()
    assert store.get("key")["n"]["k"] == [1, 2]
    assert store.get("missing") is None


def test_what_a_real_store_could_not_hold_is_refused():
    store = MemoryCheckpointStore()
    with pytest.raises(TypeError):
        store.save("key", {"when": object()})
    assert store.get("key") is None
