"""Code table, local validation, result rendering and PKCS#12 handling."""

from __future__ import annotations

import base64
import csv
import datetime
import gzip
import os
import stat
from pathlib import Path

import pytest

from mailsec.rm import codes, pkcs12, render, validate

SPEC_TABLE = {
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
    assert {c: codes.describe(c).range for c in codes.RM_CODES} == SPEC_TABLE
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
    cert = pkcs12.open_pkcs12(p12(client_cert), "pw")
    with pytest.raises(RuntimeError), pkcs12.client_cert_files(cert) as (chain, key):
        folder = os.path.dirname(chain)
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(chain).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
        assert Path(key).read_bytes() == cert.key_pem
        raise RuntimeError("boom")
    assert not os.path.exists(folder)
    assert list(private_tmpdir.iterdir()) == []
