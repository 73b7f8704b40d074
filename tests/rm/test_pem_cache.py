"""The PEM cache of the client certificate: filled on the first send, used by the
next ones without opening the PKCS#12, invalidated by a new PKCS#12, never a
reason for a mail to fail, never a way around a wrong password or an expiry."""

from __future__ import annotations

import base64
import datetime
import json

import pytest

from mailsec.rm import pem_cache, pkcs12
from rm.conftest import P12_PASSWORD, SENDER, MemorySecrets, account_fields, leftover_cert_dirs


@pytest.fixture
def store():
    return MemorySecrets()


def cache_entry(store) -> dict:
    assert list(store.values) == ["rm1"]
    return json.loads(store.values["rm1"])


def no_pkcs12(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the PKCS#12 was opened although the cache holds it")

    monkeypatch.setattr(pkcs12, "open_pkcs12", refuse)


def test_first_send_fills_the_cache_and_the_next_uses_it(
    run_action, sim, client_cert, ca, store, monkeypatch, private_tmpdir
):
    fields = account_fields(sim, client_cert, ca)
    first = run_action(account=fields, store=store)
    assert first.event["code"] == "DONE" and first.timings["certificate_source"] == "pkcs12"
    entry = cache_entry(store)
    assert entry["p12_sha256"] == pem_cache.fingerprint(fields["client_certificate"])
    assert entry["sender"] == SENDER and "CN=splunk-rm" in entry["subject"]
    assert entry["key_pem_encrypted"].startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    text = store.values["rm1"]
    assert "BEGIN PRIVATE KEY" not in text and P12_PASSWORD not in text
    assert client_cert.key_pem.decode() not in text

    no_pkcs12(monkeypatch)
    second = run_action(account=fields, store=store)
    assert second.status == 0 and second.event["code"] == "DONE"
    assert second.timings["certificate_source"] == "cache"
    assert second.event["sender"] == SENDER
    assert second.event["certificate_subject"] == first.event["certificate_subject"]
    assert store.writes == 1 and len(sim.mailbox) == 2
    assert leftover_cert_dirs(private_tmpdir) == []


def test_a_new_pkcs12_replaces_the_cache(run_action, sim, client_cert, ca, store):
    run_action(account=account_fields(sim, client_cert, ca), store=store)
    old = cache_entry(store)
    renewed = ca.issue_client("splunk-rm", email=SENDER)
    fields = account_fields(sim, renewed, ca)
    run = run_action(account=fields, store=store)
    assert run.event["code"] == "DONE" and run.timings["certificate_source"] == "pkcs12"
    new = cache_entry(store)
    assert new["p12_sha256"] == pem_cache.fingerprint(fields["client_certificate"])
    assert new["p12_sha256"] != old["p12_sha256"] and new["cert_pem"] != old["cert_pem"]
    assert run_action(account=fields, store=store).timings["certificate_source"] == "cache"


def test_a_wrong_password_is_reported_even_with_a_cache(run_action, sim, client_cert, ca, store):
    run_action(account=account_fields(sim, client_cert, ca), store=store)
    connections = sim.connections
    wrong = account_fields(sim, client_cert, ca, certificate_password="wrong-password")
    run = run_action(account=wrong, store=store)
    assert run.event["code"] == "CERTIFICATE_PASSWORD_WRONG" and run.status == 2
    assert run.event["sent"] is False and sim.connections == connections
    assert "wrong-password" not in run.log
    assert store.writes == 1  # the good entry stays


def test_an_expired_certificate_is_refused_from_the_cache(
    run_action, sim, client_cert, ca, store, monkeypatch
):
    fields = account_fields(sim, client_cert, ca)
    run_action(account=fields, store=store)
    no_pkcs12(monkeypatch)
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=3650)
    connections = sim.connections
    run = run_action(account=fields, store=store, now=lambda: later)
    assert run.event["code"] == "CERTIFICATE_EXPIRED" and run.status == 2
    assert "valid from" in run.event["detail"] and sim.connections == connections


def test_a_damaged_entry_is_a_miss(run_action, sim, client_cert, ca, store):
    fields = account_fields(sim, client_cert, ca)
    run_action(account=fields, store=store)
    key = "rm1"
    entry = json.loads(store.values[key])
    body = entry["key_pem_encrypted"].splitlines()
    body[3] = base64.b64encode(b"\x00" * 48).decode()  # corrupt key bytes
    entry["key_pem_encrypted"] = "\n".join(body) + "\n"
    store.values[key] = json.dumps(entry)  # the check digest no longer matches
    run = run_action(account=fields, store=store)
    assert run.event["code"] == "DONE" and run.timings["certificate_source"] == "pkcs12"
    assert store.writes == 2 and pem_cache.read_entry(store.values[key], entry["p12_sha256"])


def test_a_cache_that_cannot_be_written_does_not_stop_the_mail(
    run_action, sim, client_cert, ca, store
):
    store.fail_writes = True
    run = run_action(account=account_fields(sim, client_cert, ca), store=store)
    assert run.status == 0 and run.event["code"] == "DONE"
    assert "cannot cache the client certificate" in run.log and "403" in run.log
    assert store.values == {}


def test_an_account_without_password_is_not_cached(run_action, sim, ca, store):
    unprotected = ca.issue_client("splunk-rm", email=SENDER)
    fields = account_fields(sim, unprotected, ca)
    fields["client_certificate"] = base64.b64encode(unprotected.to_pkcs12(None)).decode()
    fields["certificate_password"] = None
    run = run_action(account=fields, store=store)
    assert run.event["code"] == "DONE" and store.values == {}
