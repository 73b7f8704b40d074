"""The alert action's splunkd reader (http.client, one keep-alive connection)
against the splunkd stand-in: the same account and settings as the solnlib reader,
UCC's chunked secrets put together as solnlib does, and the add-on's own secrets
written in a form solnlib reads back."""

from __future__ import annotations

import json

import pytest
from solnlib.credentials import CredentialManager

from harness.splunkd import SplunkdStandIn
from mailsec.adapters import config as solnlib_config
from mailsec.adapters.lean_config import LeanSplunkd, SplunkdError, load_account, load_settings
from mailsec.adapters.settings import addon_realm, conf_realm
from mailsec.adapters.splunkd import Splunkd
from mailsec.adapters.stored_secrets import CRED_END_MARK, CRED_SEP, reassemble, split_chunk
from mailsec.core.params import ConfigError

LONG_SECRET = "s3cr3t-" + "x" * 700  # three chunks and an end marker


@pytest.fixture
def seeded(splunkd):
    splunkd.add_account(
        "rm_account",
        "rm1",
        {"hostname": "rm.example:8443", "whitelist_name": "W", "client_certificate": LONG_SECRET,
         "certificate_password": "pw-123456", "ca_bundle": ""},
        encrypted=("client_certificate", "certificate_password"),
    )  # fmt: skip
    splunkd.add_account("ser_account", "rm1", {"api_key": "other"}, encrypted=("api_key",))
    splunkd.set_settings(
        "proxy",
        {"proxy_enabled": "1", "proxy_url": "p.example", "proxy_port": "3128",
         "proxy_username": "u", "proxy_password": "proxy-pass-1"},
        encrypted=("proxy_password",),
    )  # fmt: skip
    splunkd.set_settings("logging", {"loglevel": "DEBUG"})
    return splunkd


def without_metadata(stanza: dict) -> dict:
    return {k: v for k, v in stanza.items() if not k.startswith(("eai:", "disabled"))}


def lean(splunkd, key=None):
    return LeanSplunkd(splunkd.server_uri, key or splunkd.session_key)


def test_same_account_and_settings_as_solnlib(seeded):
    reader = lean(seeded)
    where = Splunkd(seeded.server_uri, seeded.session_key)
    account = load_account(reader, "rm_account", "rm1")
    settings = load_settings(reader)
    lean_calls = list(seeded.requests_log)
    served = set(seeded.passwords_served)
    assert account == without_metadata(solnlib_config.load_account(where, "rm_account", "rm1"))
    assert account["client_certificate"] == LONG_SECRET and account["ca_bundle"] is None
    expected = solnlib_config.load_settings(where)
    assert settings == {k: without_metadata(v) for k, v in expected.items()}
    assert settings["proxy"]["proxy_password"] == "proxy-pass-1"
    # the account's own secrets and the settings' (the proxy password), nothing else:
    # not the ser_account of the same name
    assert [r.method for r in lean_calls] == ["GET"] * 4
    assert sum("storage/passwords" in r.path for r in lean_calls) == 2
    assert {(realm, split_chunk(user)[0]) for realm, user in served} == {
        (conf_realm("ta_mailsec_rm_account"), "rm1"),
        (conf_realm("ta_mailsec_settings"), "proxy"),
    }
    assert all(r.query.get("output_mode") == "json" for r in lean_calls)
    reader.close()


def test_missing_account_and_refused_session(seeded):
    with pytest.raises(ConfigError, match="no rm_account named 'nope'"):
        load_account(lean(seeded), "rm_account", "nope")
    with pytest.raises(SplunkdError) as caught:
        load_account(lean(seeded, "expired"), "rm_account", "rm1")
    assert caught.value.status == 401


def test_chunks_joined_up_to_the_end_marker_as_solnlib_does():
    def entry(user, clear, realm="r"):
        return {"realm": realm, "username": user, "clear_password": clear}

    entries = [
        entry(f"a{CRED_SEP}2", "def"),
        entry(f"a{CRED_SEP}1", "abc"),
        entry(f"a{CRED_SEP}3", CRED_END_MARK),
        entry(f"a{CRED_SEP}4", "left over from a longer older value"),
        entry("old", "one piece"),
        entry(f"a{CRED_SEP}1", "other realm", realm="s"),
    ]
    assert reassemble(entries) == {("r", "a"): "abcdef", ("r", "old"): "one piece",
                                   ("s", "a"): "other realm"}  # fmt: skip


def test_own_secrets_are_written_as_solnlib_writes_them(seeded):
    realm = addon_realm("rm_pem_cache")
    reader = lean(seeded)
    long_value = json.dumps({"pem": "A" * 1000})
    reader.set_secret(realm, "rm1", long_value)
    manager = CredentialManager(seeded.session_key, "TA_mailsec", realm=realm, **seeded.location)
    assert manager.get_password("rm1") == long_value
    assert lean(seeded).secret(realm, "rm1") == long_value
    # a shorter value replaces it, and the chunks it no longer needs are removed,
    # without splunkd's answer to the DELETE handing over the other secrets
    seeded.clear_log()
    reader.set_secret(realm, "rm1", "short")
    assert {(r, split_chunk(u)[0]) for r, u in seeded.passwords_served} == {(realm, "rm1")}
    assert manager.get_password("rm1") == "short"
    assert lean(seeded).secret(realm, "rm1") == "short"
    users = [e["username"] for e in seeded.passwords_raw() if e["realm"] == realm]
    assert sorted(users) == [f"rm1{CRED_SEP}1", f"rm1{CRED_SEP}2"]
    # UCC's own entries of the account are untouched
    assert load_account(lean(seeded), "rm_account", "rm1")["client_certificate"] == LONG_SECRET


def test_a_closed_keep_alive_connection_is_reopened(seeded):
    reader = lean(seeded)
    assert reader.stanzas("ta_mailsec_settings")
    port, key = seeded.port, seeded.session_key
    seeded.stop()  # splunkd restarts: the kept-alive connection is closed on its side
    with SplunkdStandIn(state=seeded.state, port=port, session_key=key):
        assert reader.stanzas("ta_mailsec_settings")["logging"]["loglevel"] == "DEBUG"


def test_the_cache_entry_of_a_removed_account_is_deleted(seeded):
    """What RmAccountHandler.handleRemove does, through solnlib as inside splunkd."""
    from mailsec.adapters.secret_cache import delete_credential
    from mailsec.adapters.settings import RM_PEM_CACHE_REALM as CACHE_REALM

    lean(seeded).set_secret(CACHE_REALM, "rm1", "x" * 600)
    where = Splunkd(seeded.server_uri, seeded.session_key)
    assert delete_credential(where, CACHE_REALM, "rm1") is True
    assert [e for e in seeded.passwords_raw() if e["realm"] == CACHE_REALM] == []
    assert delete_credential(where, CACHE_REALM, "rm1") is False
    # the account's own secrets are untouched
    assert load_account(lean(seeded), "rm_account", "rm1")["client_certificate"] == LONG_SECRET
