"""Code table, local validation, result rendering and PKCS#12 handling."""

from __future__ import annotations

import base64
import csv
import datetime
import gzip
import json
import os
import ssl
import stat
from pathlib import Path

import pytest

from mailsec.rm import codes, pem_cache, pkcs12, render, validate

RM_CODE_RANGES = {
    "DONE": "dispatch",
    "MISSING_ANY_PERMISSION": "security",
    "HAS_PERMISSION_BUT_MISSING_WHITELIST_ENTRY": "security",
    "HAS_PERMISSION_HAS_WHITELIST_BUT_NONE_MATCH_NAME": "security",
    "HAS_PERMISSION_HAS_WHITELIST_MATCH_NAME_BUT_IP_MISMATCH": "security",
    "HAS_PERMISSION_HAS_WHITELIST_MATCH_NAME_MATCH_IP_AMBIGUOUS": "security",
    "HAS_PERMISSION_HAS_WHITELIST_MATCH_NAME_MATCH_IP_UNIQUE_BUT_SERVERHOSTNAME_MISMATCH": (
        "security"
    ),
    "RECIPIENTS_ADDRESS_MISS_AT_SIGN": "validation",
    "RECIPIENTS_ADDRESS_MUST_BE_LOWCASE": "validation",
    "SUBJECT_IS_NOT_ALLOWED_TO_BE_EMPTY": "validation",
    "TEXT_OR_HTML_MUST_BE_SET": "validation",
    "ERROR_CHECK_MAIL_SEND_TRIAL": "transport",
    "REQUEST_CONTENT_TYPE_MUST_BE_JSON": "validation",
}


def test_code_table_is_the_spec_table():
    assert {c: codes.describe(c).range for c in codes.RM_CODES} == RM_CODE_RANGES
    for code in codes.CODES:
        info = codes.describe(code)
        assert info.explanation.endswith(".") and info.action_to_take.endswith(".")
    assert not set(codes.ADDON_CODES) & set(codes.RM_CODES)


def test_unknown_code_is_reported_as_it_came():
    info = codes.describe("QUOTA_EXCEEDED_FOR_TODAY")
    assert (info.code, info.range) == ("QUOTA_EXCEEDED_FOR_TODAY", "unknown")
    assert "does not know" in info.explanation


def test_recipients_trimmed_lower_cased_and_empty_entries_dropped():
    got = validate.normalise_recipients(" Alice@Corp.Example ,, bob@corp.example;  ,")
    assert got.addresses == ("alice@corp.example", "bob@corp.example")
    assert got.changed is True
    assert got.domains == ["corp.example"]
    same = validate.normalise_recipients("alice@corp.example, bob@corp.example")
    assert same.changed is False  # spaces around commas are not a change worth a warning


@pytest.mark.parametrize(
    ("recipients", "subject", "text", "html", "code"),
    [
        ((), "s", "t", None, "RECIPIENTS_MISSING"),
        (("ops.corp.example",), "s", "t", None, "RECIPIENTS_ADDRESS_MISS_AT_SIGN"),
        (("Ops@corp.example",), "s", "t", None, "RECIPIENTS_ADDRESS_MUST_BE_LOWCASE"),
        (("ops@corp.example",), "  ", "t", None, "SUBJECT_IS_NOT_ALLOWED_TO_BE_EMPTY"),
        (("ops@corp.example",), None, "t", None, "SUBJECT_IS_NOT_ALLOWED_TO_BE_EMPTY"),
        (("ops@corp.example",), "s", " ", "", "TEXT_OR_HTML_MUST_BE_SET"),
        (("ops@corp.example",), "s", None, "<b>x</b>", None),
        (("ops@corp.example",), "s", "t", None, None),
    ],
)
def test_local_validation_uses_rm_codes(recipients, subject, text, html, code):
    assert validate.violation(recipients, subject, text, html) == code


def write_results(path, header, rows):
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def test_results_table_text_and_html_escaped(tmp_path):
    path = write_results(
        tmp_path / "results.csv.gz",
        ["host", "msg", "__mv_host", "__mv_msg", "_cd"],
        [
            ["web1", "<script>alert('x')</script> & co", "", "", "1:2"],
            ["web2\nweb3", "ok", "$web2$;$web$$3$", "", "1:3"],
            ["web4", "third", "", "", "1:4"],
        ],
    )
    table = render.read_results(path, max_rows=2)
    assert table.columns == ["host", "msg"]
    assert table.rows == [["web1", "<script>alert('x')</script> & co"], ["web2, web$3", "ok"]]
    assert table.total_rows == 3
    html = render.as_html(table)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in html
    assert "First 2 of 3 results" in html
    text = render.as_text(table)
    assert "host        | msg" in text
    assert "web2, web$3 | ok" in text


def test_table_is_appended_only_to_bodies_that_are_set(tmp_path):
    table = render.ResultTable(["a"], [["1"]], 1)
    text, html = render.append_table("Body", None, table)
    assert text.startswith("Body\n\n1 result") and html is None
    text, html = render.append_table(None, None, table)
    assert "1 result" in text and "<table" in html


def p12(client, password=b"pw"):
    return base64.b64encode(client.to_pkcs12(password)).decode()


def test_pkcs12_opens_in_memory(client_cert):
    cert = pkcs12.open_pkcs12(p12(client_cert), "pw")
    assert cert.email == "splunk-alerts@corp.example"
    assert "CN=splunk-rm" in cert.subject
    assert cert.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert cert.chain_pem.count(b"BEGIN CERTIFICATE") == 2  # the certificate and its CA


@pytest.mark.parametrize(
    ("data", "password", "code"),
    [
        ("wrong", "not-the-password", "CERTIFICATE_PASSWORD_WRONG"),
        ("wrong", None, "CERTIFICATE_PASSWORD_WRONG"),
        ("truncated", "pw", "CERTIFICATE_FILE_INVALID"),
        ("not-base64", "pw", "CERTIFICATE_FILE_INVALID"),
        ("pem", "pw", "CERTIFICATE_FILE_INVALID"),
    ],
)
def test_pkcs12_errors_are_codes_not_tracebacks(client_cert, data, password, code):
    good = client_cert.to_pkcs12(b"pw")
    value = {
        "wrong": base64.b64encode(good).decode(),
        "truncated": base64.b64encode(good[: len(good) // 2]).decode(),
        "not-base64": "this is not base64 !!!",
        "pem": base64.b64encode(client_cert.cert_pem).decode(),
    }[data]
    with pytest.raises(pkcs12.CertificateError) as caught:
        pkcs12.open_pkcs12(value, password)
    assert caught.value.code == code
    assert "pw" not in str(caught.value)


def test_expired_certificate_is_refused(ca):
    old = ca.issue_client(
        "old",
        email="old@corp.example",
        valid_days=1,
        not_valid_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
    )
    with pytest.raises(pkcs12.CertificateError) as caught:
        pkcs12.open_pkcs12(p12(old), "pw")
    assert caught.value.code == "CERTIFICATE_EXPIRED"


def test_pem_files_are_private_and_removed_even_on_error(client_cert, private_tmpdir):
    """Where there is no in-memory file (not Linux), a private folder, removed."""
    cert = pkcs12.open_pkcs12(p12(client_cert), "pw")
    files = pem_cache.pem_files(cert.chain_pem, cert.key_pem_encrypted, in_memory=False)
    with pytest.raises(RuntimeError), files as (chain, key):
        folder = os.path.dirname(chain)
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(chain).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
        assert Path(key).read_bytes() == cert.key_pem_encrypted
        raise RuntimeError("boom")
    assert not os.path.exists(folder)
    assert list(private_tmpdir.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="Linux only")
def test_pem_files_in_memory_touch_no_disk(client_cert, private_tmpdir):
    cert = pkcs12.open_pkcs12(p12(client_cert), "pw")
    files = pem_cache.pem_files(cert.chain_pem, cert.key_pem_encrypted)
    with pytest.raises(RuntimeError), files as (chain, key):
        assert chain.startswith("/proc/self/fd/") and key.startswith("/proc/self/fd/")
        assert Path(key).read_bytes() == cert.key_pem_encrypted
        fd = int(key.rsplit("/", 1)[1])
        raise RuntimeError("boom")
    with pytest.raises(OSError):
        os.fstat(fd)  # closed: the memory is gone
    assert list(private_tmpdir.iterdir()) == []


def test_pkcs12_key_is_reencrypted_with_the_certificate_password(client_cert, tmp_path):
    cert = pkcs12.open_pkcs12(p12(client_cert), "pw")
    assert cert.key_pem_encrypted.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pem_cache.pem_files(cert.chain_pem, cert.key_pem_encrypted) as (chain, key):
        ssl.create_default_context().load_cert_chain(chain, key, password="pw")
        with pytest.raises(ssl.SSLError):
            ssl.create_default_context().load_cert_chain(chain, key, password="other")
    assert pkcs12.open_pkcs12(p12(client_cert, None), None).key_pem_encrypted is None


def test_cache_entry_round_trip_and_misses(client_cert):
    value = p12(client_cert)
    cert = pkcs12.open_pkcs12(value, "pw")
    sha = pem_cache.fingerprint(value)
    text = pem_cache.entry_json(cert, sha)
    assert "BEGIN PRIVATE KEY" not in text and "ENCRYPTED PRIVATE KEY" in text
    cached = pem_cache.read_entry(text, sha)
    assert cached.subject == cert.subject and cached.email == cert.email
    assert cached.chain_pem == cert.chain_pem and cached.key_pem == cert.key_pem_encrypted
    assert cached.not_after == cert.not_after.timestamp()
    assert "KEY" not in repr(cached)
    # another PKCS#12, a damaged entry, not an entry at all: misses
    assert pem_cache.read_entry(text, pem_cache.fingerprint(value + "A")) is None
    damaged = json.loads(text)
    damaged["subject"] = "CN=someone else"
    assert pem_cache.read_entry(json.dumps(damaged), sha) is None
    assert pem_cache.read_entry(text[: len(text) // 2], sha) is None
    assert pem_cache.read_entry(None, sha) is None
    with pytest.raises(ValueError):  # a key without a password is never cached
        pem_cache.entry_json(pkcs12.open_pkcs12(p12(client_cert, None), None), sha)
