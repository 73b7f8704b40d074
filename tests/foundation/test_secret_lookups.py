"""The modular inputs' storage/passwords look-ups (adapters/secret_cache.py, through
splunklib against the splunkd stand-in): an absent entry is an answer, not an error
(no solnlib retry, no traceback, no wait), and a look-up receives only its own
entries (docs/operations.md "stderr", docs/security.md "Least privilege")."""

from __future__ import annotations

import logging
import time

from mailsec.adapters import config
from mailsec.adapters.secret_cache import (
    TOKEN_CACHE_REALM,
    StoragePasswordsCache,
    delete_credential,
    read_credential,
)
from mailsec.adapters.splunkd import Splunkd
from mailsec.adapters.stored_secrets import split_chunk


def where(splunkd) -> Splunkd:
    return Splunkd(splunkd.server_uri, splunkd.session_key)


def test_absent_entries_are_none_without_a_traceback_or_a_wait(splunkd, caplog):
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    cache = StoragePasswordsCache(where(splunkd), owner="ser_report.main")
    assert cache.get("ser_access_token") is None
    cache.delete("ser_access_token")  # nothing to delete: fine
    assert config.load_input_secrets(where(splunkd), "sense_listener", "nope") == {}
    assert delete_credential(where(splunkd), TOKEN_CACHE_REALM, "nope") is False
    assert time.monotonic() - started < 3  # solnlib's retry would sleep 1 + 2 + 4 s
    assert [r.getMessage()[:60] for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_cache_reads_its_own_entries_only(splunkd):
    connection = where(splunkd)
    mine = StoragePasswordsCache(connection, owner="ser_report.main")
    other = StoragePasswordsCache(connection, owner="ser_report.main2")
    mine.set("token", "t" * 600)  # chunked: three chunks and an end marker
    other.set("token", "other-token")
    splunkd.add_input_secrets("sense_listener", "main", {"api_key_value": "k1"})
    splunkd.clear_log()
    assert mine.get("token") == "t" * 600
    served = {(realm, split_chunk(user)[0]) for realm, user in splunkd.passwords_served}
    assert served == {(TOKEN_CACHE_REALM, "ser_report.main.token")}
    assert read_credential(connection, TOKEN_CACHE_REALM, "ser_report.main2.token") == (
        "other-token"
    )
    mine.set("token", "short")
    assert mine.get("token") == "short" and other.get("token") == "other-token"
    mine.delete("token")
    assert mine.get("token") is None and other.get("token") == "other-token"
    assert other.clear() == 1 and other.get("token") is None


def test_writing_and_deleting_a_value_receives_only_its_own_entries(splunkd):
    """solnlib's set_password lists the whole realm (every input's token) to update an
    existing value, and splunkd answers a DELETE with the collection left."""
    connection = where(splunkd)
    StoragePasswordsCache(connection, owner="audit_export.other").set("token", "x" * 300)
    splunkd.add_input_secrets("sense_listener", "main", {"api_key_value": "k1"})
    mine = StoragePasswordsCache(connection, owner="ser_report.main")
    mine.set("token", "t" * 600)
    splunkd.clear_log()
    mine.set("token", "t" * 700)  # same chunks, updated
    mine.set("token", "short")  # two chunks left over, deleted
    mine.delete("token")
    served = {(realm, split_chunk(user)[0]) for realm, user in splunkd.passwords_served}
    assert served <= {(TOKEN_CACHE_REALM, "ser_report.main.token")}
    left = [e["username"] for e in splunkd.passwords_raw() if e["realm"] == TOKEN_CACHE_REALM]
    assert all(name.startswith("audit_export.other.token") for name in left) and left
