"""Self-tests of the splunkd stand-in, driven through the real splunklib and solnlib."""

from __future__ import annotations

import json
import threading
import time
from xml.etree import ElementTree

import pytest
from solnlib.conf_manager import ConfManager
from solnlib.credentials import CredentialManager, CredentialNotExistException
from solnlib.modular_input.checkpointer import KVStoreCheckpointer
from solnlib.soln_exceptions import ConfManagerException, ConfStanzaNotExistException
from splunklib import binding, client

from harness.splunkd import (
    CRED_END_MARK,
    CRED_SEP,
    ENCRYPTED_PLACEHOLDER,
    SplunkdStandIn,
    credential_chunks,
)

APP = "TA_mailsec"
ACCOUNT_CONF = "ta_mailsec_ser_account"
CHECKPOINTS = "ta_mailsec_checkpoints"


@pytest.fixture
def splunkd():
    with SplunkdStandIn(APP) as standin:
        yield standin
    assert standin.errors == []  # the stand-in itself never failed


def _where(splunkd):
    return splunkd.location


def _service(splunkd, token=None):
    return splunkd.service(token=token or splunkd.session_key)


@pytest.fixture
def no_sleep(monkeypatch):
    """solnlib's @retry sleeps 1+2+4 s and urllib3's Retry backs off too: skip it."""
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


# ---------------------------------------------------------------------------
# Accounts through solnlib's ConfManager
# ---------------------------------------------------------------------------


def test_conf_manager_reads_account_with_decrypted_secrets(splunkd):
    long_secret = "s3cr3t-" + "é" * 300 + "-end"  # > 255 chars: several chunks
    splunkd.add_account(
        "ser_account",
        "acct1",
        {
            "client_id": "the-key",
            "client_secret": long_secret,
            "auth_url": "https://auth.example/v1/token",
            "ca_bundle": "",  # optional, empty
            "max_requests_per_minute": 900,  # not a string: stored as one
            "spare_secret": "",  # encrypted but empty
        },
        encrypted=["client_secret", "spare_secret"],
    )
    cfm = ConfManager(
        splunkd.session_key, APP, realm=splunkd.conf_realm(ACCOUNT_CONF), **_where(splunkd)
    )
    acct = cfm.get_conf(ACCOUNT_CONF).get("acct1")

    assert acct["client_id"] == "the-key"
    assert acct["client_secret"] == long_secret
    assert acct["auth_url"] == "https://auth.example/v1/token"
    assert acct["ca_bundle"] is None  # empty comes back as None, not ""
    assert acct["spare_secret"] is None
    assert acct["max_requests_per_minute"] == "900"
    assert acct["disabled"] == "0"
    assert acct["eai:appName"] == APP

    # What UCC would have stored: the placeholder in the conf, the secret elsewhere.
    stored = splunkd.get_conf(ACCOUNT_CONF)["acct1"]
    assert stored["client_secret"] == ENCRYPTED_PLACEHOLDER
    assert stored["spare_secret"] == ""
    raw = splunkd.passwords_raw()
    payload = json.dumps({"client_secret": long_secret})
    assert len(raw) == len(payload) // 255 + 2  # chunks plus the end marker
    assert {e["realm"] for e in raw} == {
        "__REST_CREDENTIAL__#TA_mailsec#configs/conf-ta_mailsec_ser_account"
    }
    assert raw[-1]["clear_password"] == CRED_END_MARK
    assert raw[0]["name"] == (
        f"__REST_CREDENTIAL__#TA_mailsec#configs/conf-ta_mailsec_ser_account:acct1{CRED_SEP}1:"
    )
    assert all(long_secret not in json.dumps(s) for s in splunkd.get_conf(ACCOUNT_CONF).values())
    assert splunkd.get_password(splunkd.conf_realm(ACCOUNT_CONF), "acct1") == payload


def test_conf_manager_get_all_missing_stanza_and_missing_conf(splunkd):
    splunkd.add_account(
        "ser_account", "b", {"client_id": "2", "client_secret": "y"}, ["client_secret"]
    )
    splunkd.add_account(
        "ser_account", "a", {"client_id": "1", "client_secret": "x"}, ["client_secret"]
    )
    cfm = ConfManager(
        splunkd.session_key, APP, realm=splunkd.conf_realm(ACCOUNT_CONF), **_where(splunkd)
    )
    conf = cfm.get_conf(ACCOUNT_CONF)
    everything = conf.get_all()
    assert list(everything) == ["a", "b"]
    assert everything["b"]["client_secret"] == "y"
    with pytest.raises(ConfStanzaNotExistException):
        conf.get("nope")
    assert not conf.stanza_exist("nope")
    assert conf.stanza_exist("a")
    with pytest.raises(ConfManagerException):
        cfm.get_conf("ta_mailsec_google_account")
    assert splunkd.unexpected_requests == []


def test_conf_file_update_and_delete_round_trip(splunkd):
    splunkd.ensure_conf(ACCOUNT_CONF)  # the app ships the (empty) conf file
    realm = splunkd.conf_realm(ACCOUNT_CONF)
    conf = ConfManager(splunkd.session_key, APP, realm=realm, **_where(splunkd)).get_conf(
        ACCOUNT_CONF
    )
    conf.update("acct9", {"client_id": "k", "client_secret": "v" * 600}, ["client_secret"])
    assert splunkd.get_conf(ACCOUNT_CONF)["acct9"] == {
        "client_id": "k",
        "client_secret": ENCRYPTED_PLACEHOLDER,
    }
    assert conf.get("acct9")["client_secret"] == "v" * 600
    conf.update("acct9", {"client_id": "k2"})
    assert conf.get("acct9")["client_id"] == "k2"
    conf.delete("acct9")
    assert splunkd.get_conf(ACCOUNT_CONF) == {}
    assert splunkd.passwords_raw() == []
    with pytest.raises(ConfStanzaNotExistException):
        conf.get("acct9")


def test_settings_and_input_secrets(splunkd):
    splunkd.set_settings("logging", {"loglevel": "DEBUG"})
    splunkd.set_settings(
        "proxy",
        {"proxy_enabled": True, "proxy_url": "proxy.local", "proxy_port": 3128,
         "proxy_username": "u", "proxy_password": "p@ss"},
        encrypted=["proxy_password"],
    )  # fmt: skip
    settings_conf = splunkd.conf_name("settings")
    assert settings_conf == "ta_mailsec_settings"
    conf = ConfManager(
        splunkd.session_key, APP, realm=splunkd.conf_realm(settings_conf), **_where(splunkd)
    ).get_conf(settings_conf)
    proxy = conf.get("proxy")
    assert (proxy["proxy_enabled"], proxy["proxy_port"], proxy["proxy_password"]) == (
        "1",
        "3128",
        "p@ss",
    )
    assert conf.get("logging")["loglevel"] == "DEBUG"

    splunkd.add_input_secrets("sense_listener", "hook1", {"api_key_value": "k" * 400})
    cm = CredentialManager(
        splunkd.session_key,
        APP,
        realm="__REST_CREDENTIAL__#TA_mailsec#data/inputs/sense_listener",
        **_where(splunkd),
    )
    assert json.loads(cm.get_password("hook1")) == {"api_key_value": "k" * 400}


# ---------------------------------------------------------------------------
# storage/passwords through CredentialManager and splunklib
# ---------------------------------------------------------------------------


def test_credential_manager_set_get_delete(splunkd):
    cm = CredentialManager(splunkd.session_key, APP, realm="ta_mailsec_tokens", **_where(splunkd))
    cm.set_password("ser:acct1", "t" * 700)  # a ":" in the user name, and 3 chunks
    assert cm.get_password("ser:acct1") == "t" * 700
    assert any("ser\\:acct1" in e["name"] for e in splunkd.passwords_raw())
    cm.set_password("ser:acct1", "short")  # overwrite: 409 then update, as splunkd
    assert cm.get_password("ser:acct1") == "short"
    assert splunkd.get_password("ta_mailsec_tokens", "ser:acct1") == "short"
    cm.delete_password("ser:acct1")
    assert splunkd.passwords_raw() == []
    with pytest.raises(CredentialNotExistException):
        cm.get_password("ser:acct1")
    with pytest.raises(CredentialNotExistException):
        cm.delete_password("ser:acct1")


def test_splunklib_storage_passwords_and_duplicate(splunkd):
    service = _service(splunkd)
    sp = service.storage_passwords
    created = sp.create("pw1", "alice", "realm/with/slash")
    assert created.name == "realm/with/slash:alice:"
    assert created.clear_password == "pw1"
    with pytest.raises(binding.HTTPError) as err:
        sp.create("pw2", "alice", "realm/with/slash")
    assert err.value.status == 409
    [entry] = sp.list(count=-1, search="realm=realm/with/slash")
    assert (entry.username, entry.realm, entry.content["password"]) == (
        "alice",
        "realm/with/slash",
        "********",
    )
    entry.update(password="pw3")
    assert sp.list()[0].clear_password == "pw3"
    sp.delete("alice", "realm/with/slash")
    assert len(sp) == 0
    with pytest.raises(KeyError):
        sp.delete("alice", "realm/with/slash")


def test_credential_chunks_follow_solnlib(splunkd):
    cm = CredentialManager(splunkd.session_key, APP, realm="r", **_where(splunkd))
    value = "".join(chr(0x41 + i % 26) for i in range(520))
    cm.set_password("u", value)
    written = {(e["username"], e["clear_password"]) for e in splunkd.passwords_raw()}
    assert written == set(credential_chunks("u", value))


# ---------------------------------------------------------------------------
# KV store
# ---------------------------------------------------------------------------


def test_kvstore_checkpointer(splunkd):
    ck = KVStoreCheckpointer(CHECKPOINTS, splunkd.session_key, APP, **_where(splunkd))
    assert CHECKPOINTS in [c.name for c in _service(splunkd).kvstore]  # created on demand
    assert ck.get("ser://acct1 hourly/1") is None  # missing key: 404 -> None
    ck.update("ser://acct1 hourly/1", {"window_end": "2024-01-01T01:00:00Z", "n": 3})
    assert ck.get("ser://acct1 hourly/1") == {"window_end": "2024-01-01T01:00:00Z", "n": 3}
    record = splunkd.kv_records(CHECKPOINTS)["ser://acct1 hourly/1"]
    assert record["state"] == json.dumps({"window_end": "2024-01-01T01:00:00Z", "n": 3})
    assert record["_user"] == "nobody"
    ck.batch_update([{"_key": "a", "state": 1}, {"_key": "b", "state": [1, 2]}])
    assert (ck.get("a"), ck.get("b")) == (1, [1, 2])
    ck.update("a", 2)
    assert splunkd.kv_checkpoint(CHECKPOINTS, "a") == 2
    ck.delete("a")
    ck.delete("a")  # deleting a missing key is not an error for the checkpointer
    assert ck.get("a") is None
    assert sorted(splunkd.kv_records(CHECKPOINTS)) == ["b", "ser://acct1 hourly/1"]
    assert splunkd.unexpected_requests == []


def test_kvstore_state_survives_a_restart():
    with SplunkdStandIn(APP) as first:
        KVStoreCheckpointer(CHECKPOINTS, first.session_key, APP, **_where(first)).update(
            "in1", {"pos": 42}
        )
    with SplunkdStandIn(APP, state=first.state) as second:
        ck = KVStoreCheckpointer(CHECKPOINTS, second.session_key, APP, **_where(second))
        assert ck.get("in1") == {"pos": 42}


def test_splunklib_kvstore_data_api(splunkd):
    splunkd.ensure_collection("things", {"n": "number"})
    data = _service(splunkd).kvstore["things"].data
    key = data.insert({"n": 1, "tag": "x"})["_key"]
    data.insert({"_key": "two", "n": 2, "tag": "y"})
    with pytest.raises(binding.HTTPError) as err:
        data.insert({"_key": "two", "n": 9})
    assert err.value.status == 409
    assert [r["_key"] for r in data.query(query={"_key": "two"})] == ["two"]
    assert [r["n"] for r in data.query(query={"n": {"$gte": 1}}, sort="n:-1")] == [2, 1]
    assert [r["n"] for r in data.query(query={"$or": [{"tag": "x"}, {"n": 5}]})] == [1]
    assert data.query(limit=1, skip=1, sort="n")[0]["_key"] == "two"
    assert data.query_by_id(key)["tag"] == "x"
    data.update("two", {"n": 22})
    assert data.query_by_id("two") == {"n": 22, "_user": "nobody", "_key": "two"}
    with pytest.raises(binding.HTTPError) as err:
        data.update("missing", {"n": 0})  # not an upsert: use batch_save for that
    assert err.value.status == 404
    assert data.batch_save({"_key": "two", "n": 3}, {"n": 4})[0] == "two"
    data.delete_by_id(key)
    with pytest.raises(binding.HTTPError) as err:
        data.query_by_id(key)
    assert err.value.status == 404
    assert "Could not find object" in str(err.value)
    data.delete(json.dumps({"n": 3}))
    assert [r["n"] for r in data.query()] == [4]


def test_batch_save_limit(splunkd):
    splunkd.ensure_collection("big")
    data = _service(splunkd).kvstore["big"].data
    with pytest.raises(binding.HTTPError) as err:
        data.batch_save(*({"_key": str(i)} for i in range(1001)))
    assert err.value.status == 400
    assert len(data.batch_save(*({"_key": str(i)} for i in range(1000)))) == 1000


# ---------------------------------------------------------------------------
# Formats, auth, errors
# ---------------------------------------------------------------------------


def test_atom_and_json_shapes(splunkd):
    for name in ("c", "a", "b"):
        splunkd.set_conf("ta_mailsec_settings", name, {"k": name, "empty": ""})
    path = "configs/conf-ta_mailsec_settings"

    atom = splunkd.request("GET", path, params={"count": 2, "offset": 1})
    assert atom.status_code == 200
    assert atom.headers["Content-Type"].startswith("text/xml")
    ns = {"a": "http://www.w3.org/2005/Atom", "s": "http://dev.splunk.com/ns/rest"}
    feed = ElementTree.fromstring(atom.content)
    assert [t.text for t in feed.findall("a:entry/a:title", ns)] == ["b", "c"]
    assert feed.find("{http://a9.com/-/spec/opensearch/1.1/}totalResults").text == "3"
    keys = feed.findall("a:entry[1]/a:content/s:dict/s:key", ns)
    assert {k.get("name"): k.text for k in keys if k.get("name") in ("k", "empty")} == {
        "k": "b",
        "empty": None,
    }
    alternate = feed.find("a:entry[1]/a:link[@rel='alternate']", ns).get("href")
    assert alternate == f"/servicesNS/nobody/{APP}/configs/conf-ta_mailsec_settings/b"

    js = splunkd.request("GET", path, params={"output_mode": "json", "search": "k=a"}).json()
    assert [(e["name"], e["content"]["k"]) for e in js["entry"]] == [("a", "a")]
    assert js["entry"][0]["acl"]["app"] == APP
    assert js["entry"][0]["content"]["disabled"] is False

    missing = splunkd.request("GET", f"{path}/nope", params={"output_mode": "json"})
    assert missing.status_code == 404
    assert missing.json()["messages"][0]["type"] == "ERROR"

    service = _service(splunkd)
    assert service.info["version"].startswith("9.")
    assert service.splunk_version[0] == 9
    assert [s.name for s in service.confs["ta_mailsec_settings"].list()] == ["a", "b", "c"]


def test_unauthenticated_requests_get_401(splunkd):
    for headers in ({}, {"Authorization": "Splunk wrong"}, {"Authorization": "Bearer x"}):
        resp = splunkd.request("GET", "/services/storage/passwords", auth=False, headers=headers)
        assert resp.status_code == 401
        msg = ElementTree.fromstring(resp.content).find("messages/msg")
        assert msg.text == "call not properly authenticated"
    with pytest.raises(binding.AuthenticationError):
        _service(splunkd, token="bad-key").storage_passwords.list()


def test_solnlib_with_a_bad_session_key_fails_after_its_retries(splunkd, no_sleep):
    splunkd.add_account("ser_account", "acct1", {"client_id": "x"})
    cfm = ConfManager("bad-key", APP, realm=splunkd.conf_realm(ACCOUNT_CONF), **_where(splunkd))
    with pytest.raises(binding.HTTPError) as err:
        cfm.get_conf(ACCOUNT_CONF)
    assert err.value.status == 401
    assert no_sleep == [1, 2, 4]  # what this costs in production: 7 s


def test_login_with_username_and_password(splunkd):
    service = client.connect(username="admin", password="changeme", app=APP, **_where(splunkd))
    assert service.token == f"Splunk {splunkd.session_key}"
    with pytest.raises(binding.AuthenticationError):
        client.connect(username="admin", password="nope", **_where(splunkd))


def test_injected_503_once_is_absorbed_by_the_client_retry(splunkd):
    ck = KVStoreCheckpointer(CHECKPOINTS, splunkd.session_key, APP, **_where(splunkd))
    ck.update("in1", {"x": 1})
    splunkd.fail_next(f"storage/collections/data/{CHECKPOINTS}", 503)
    splunkd.clear_log()
    assert ck.get("in1") == {"x": 1}  # urllib3 retried at once (no back-off on the first)
    assert [r.method for r in splunkd.requests_log] == ["GET", "GET"]


def test_injected_503_surfaces_after_all_retries(splunkd, no_sleep):
    ck = KVStoreCheckpointer(CHECKPOINTS, splunkd.session_key, APP, **_where(splunkd))
    splunkd.fail_next("storage/collections/data/", 503, times=100, method="GET")
    splunkd.clear_log()
    with pytest.raises(binding.HTTPError) as err:
        ck.get("in1")
    assert err.value.status == 503
    assert "KV Store is initializing" in str(err.value)
    assert len(splunkd.requests_log) == 24  # 4 solnlib attempts x 6 urllib3 attempts

    splunkd.fail_next("/services/server/info", 500, times=1, message="boom")
    first = splunkd.request("GET", "/services/server/info")
    assert (first.status_code, ElementTree.fromstring(first.content)[0][0].text) == (500, "boom")
    assert splunkd.request("GET", "/services/server/info").status_code == 200


def test_unknown_endpoints_are_404_and_recorded(splunkd):
    # UCC's own REST handlers (used by splunktaucclib's Setup_Util) are not served.
    resp = splunkd.request("GET", "TA_mailsec_settings/logging")
    assert resp.status_code == 404
    assert ElementTree.fromstring(resp.content).find("messages/msg").text == "Not Found"
    assert splunkd.request("PUT", "/services/storage/passwords").status_code == 405
    assert [(r.method, r.path) for r in splunkd.unexpected_requests] == [
        ("GET", f"/servicesNS/nobody/{APP}/TA_mailsec_settings/logging"),
        ("PUT", "/services/storage/passwords"),
    ]


def test_concurrent_clients(splunkd):
    errors = []

    def worker(i):
        try:
            where = _where(splunkd)
            cm = CredentialManager(splunkd.session_key, APP, realm=f"r{i}", **where)
            cm.set_password("u", str(i) * 300)
            ck = KVStoreCheckpointer(CHECKPOINTS, splunkd.session_key, APP, **where)
            for n in range(5):
                ck.update(f"in{i}", n)
            assert cm.get_password("u") == str(i) * 300
            assert ck.get(f"in{i}") == 4
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len(splunkd.kv_records(CHECKPOINTS)) == 8
