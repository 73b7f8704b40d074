"""Every service parser refuses bad values with a message naming the field."""

from __future__ import annotations

import pytest

from mailsec.accounts import validate_account
from mailsec.audit.config import AuditInputConfig
from mailsec.core.params import ConfigError
from mailsec.rm.config import RmActionConfig
from mailsec.sense.config import SenseListenerConfig
from mailsec.ser.config import SerInputConfig


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"account": "a", "start_date": "last tuesday"}, "start_date"),
        ({"account": "a", "window": "2h"}, "window"),
        ({"account": "a", "max_requests_per_minute": "1001"}, "max_requests_per_minute"),
        ({"account": "a", "settle_minutes": "-1"}, "settle_minutes"),
        ({"account": "a", "revisit_days": "8"}, "revisit_days"),
        ({}, "account"),
    ],
)
def test_ser_refusals(params, field):
    with pytest.raises(ConfigError) as caught:
        SerInputConfig.from_params(params)
    assert caught.value.field == field and str(caught.value).startswith(field)


def test_ser_defaults():
    config = SerInputConfig.from_params({"account": "a"})
    assert config.window.total_seconds() == 3600
    assert config.settle.total_seconds() == 600
    assert (config.revisit_days, config.max_requests_per_minute) == (7, 900)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"port": "70000", "tls": "false", "allow_unauthenticated": "1"}, "port"),
        ({"port": "x", "tls": "false", "allow_unauthenticated": "1"}, "port"),
        ({"port": "8443", "tls": "false", "allow_unauthenticated": "1", "bind_address": "nowhere"}, "bind_address"),
        ({"port": "8443", "tls": "false", "allow_unauthenticated": "1", "path": "sense"}, "path"),
        ({"port": "8443", "tls": "true", "allow_unauthenticated": "1"}, "tls_cert_file"),
        ({"port": "8443", "tls": "false"}, "api_key_value"),
        ({"port": "8443", "tls": "false", "api_key_value": "k", "allowed_sources": "10.0.0.0/33"}, "allowed_sources"),
        ({"port": "8443", "tls": "false", "api_key_value": "k", "api_key_name": "X Key"}, "api_key_name"),
        ({"port": "8443", "tls": "false", "api_key_value": "k", "max_body_bytes": "10"}, "max_body_bytes"),
    ],
)  # fmt: skip
def test_sense_refusals(params, field):
    with pytest.raises(ConfigError) as caught:
        SenseListenerConfig.from_params(params)
    assert caught.value.field == field


def test_sense_accepts_cidrs_and_defaults(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    config = SenseListenerConfig.from_params(
        {"port": "8443", "tls_cert_file": str(cert), "tls_key_file": str(key),
         "api_key_value": "******", "allowed_sources": "10.0.0.0/8, 192.0.2.7"}
    )  # fmt: skip
    assert [str(n) for n in config.allowed_sources] == ["10.0.0.0/8", "192.0.2.7/32"]
    assert (config.path, config.api_key_name, config.max_body_bytes) == (
        "/sense",
        "X-API-Key",
        1 << 20,
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"account": "g"}, "users"),
        ({"account": "g", "users": "bad user"}, "users"),
        ({"account": "g", "users": "a", "package_content": "ALL"}, "package_content"),
        ({"account": "g", "users": "a", "export_every": "30m"}, "export_every"),
        ({"account": "g", "users": "a", "daily_request_budget": "101"}, "daily_request_budget"),
        ({"account": "g", "users": "a", "first_begin_date": "soon"}, "first_begin_date"),
        ({"account": "g", "users": "a", "include_body": "maybe"}, "include_body"),
    ],
)
def test_audit_refusals(params, field):
    with pytest.raises(ConfigError) as caught:
        AuditInputConfig.from_params(params)
    assert caught.value.field == field


def test_rm_action_refusals():
    with pytest.raises(ConfigError, match="include_results"):
        RmActionConfig.from_params({"account": "r", "include_results": "csv"})
    with pytest.raises(ConfigError, match="max_rows"):
        RmActionConfig.from_params({"account": "r", "max_rows": "0"})


@pytest.mark.parametrize(
    ("tab", "fields", "field"),
    [
        ("ser_account", {"client_id": "i", "client_secret": "s", "api_url": "http://x"}, "api_url"),
        ("ser_account", {"client_id": "i", "client_secret": "s", "ca_bundle": "junk"}, "ca_bundle"),
        ("rm_account", {"hostname": "https://rm/x", "whitelist_name": "w", "client_certificate": "c"}, "hostname"),
        ("google_account", {"domain": "d.com", "admin_email": "nobody"}, "admin_email"),
    ],
)  # fmt: skip
def test_account_refusals(tab, fields, field):
    with pytest.raises(ConfigError) as caught:
        validate_account(tab, fields)
    assert caught.value.field == field


def test_secrets_keep_their_spaces_other_values_are_trimmed():
    from mailsec.ser.config import SerAccount

    account = SerAccount.from_fields({"client_id": "  id  ", "client_secret": " pass word "})
    assert account.client_id == "id"
    assert account.client_secret == " pass word "
    with pytest.raises(ConfigError, match="client_secret"):
        SerAccount.from_fields({"client_id": "id", "client_secret": "   "})
