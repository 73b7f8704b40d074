"""The RM account is refused at save time when its certificate cannot be used."""

from __future__ import annotations

import base64
import datetime

import pytest

from harness.certs import TestCA
from mailsec.accounts import validate_account
from mailsec.core.params import ConfigError


@pytest.fixture(scope="module")
def p12():
    client = TestCA.create("RM account check CA").issue_client("sender", email="sender@example.com")
    return base64.b64encode(client.to_pkcs12(b"right password")).decode()


def fields(certificate: str, password: str) -> dict:
    return {
        "hostname": "rm.example.com",
        "whitelist_name": "splunk",
        "client_certificate": certificate,
        "certificate_password": password,
    }


def test_a_certificate_that_opens_is_accepted(p12):
    validate_account("rm_account", fields(p12, "right password"))


def test_a_wrong_password_names_the_password_field(p12):
    with pytest.raises(ConfigError) as caught:
        validate_account("rm_account", fields(p12, "wrong password"))
    assert caught.value.field == "certificate_password"


@pytest.mark.parametrize("bad", ["not base64 at all!", base64.b64encode(b"not a PKCS#12").decode()])
def test_a_file_that_is_not_pkcs12_names_the_certificate_field(bad):
    with pytest.raises(ConfigError) as caught:
        validate_account("rm_account", fields(bad, "any"))
    assert caught.value.field == "client_certificate"


def test_an_expired_certificate_is_refused():
    ca = TestCA.create("RM expired CA")
    long_ago = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    expired = ca.issue_client("old", valid_days=30, not_valid_before=long_ago)
    certificate = base64.b64encode(expired.to_pkcs12(b"pw")).decode()
    with pytest.raises(ConfigError) as caught:
        validate_account("rm_account", fields(certificate, "pw"))
    assert caught.value.field == "client_certificate"


def test_unchanged_secrets_are_not_checked_again(p12):
    validate_account("rm_account", fields("******", "******"))
    validate_account("rm_account", fields(p12, "******"))
