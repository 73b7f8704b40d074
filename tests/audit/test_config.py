"""Save-time checks of a google_account and of the input's parameters."""

from __future__ import annotations

import pytest

from audit.conftest import PASSPHRASE
from mailsec.accounts import validate_account
from mailsec.audit.config import AuditInputConfig
from mailsec.core.params import ConfigError


def account(sim, pgp_keys, **changes):
    # the key's passphrase: a private key that does not unlock is refused at save time
    fields = sim.account_fields(pgp_keys[0], pgp_keys[1], PASSPHRASE)
    fields.update(changes)
    return fields


def test_a_good_account_passes(sim, pgp_keys):
    validate_account("google_account", account(sim, pgp_keys))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("service_account_json", "{not json", "service_account_json: is not JSON"),
        ("service_account_json", '{"type": "authorized_user"}', "not a service account"),
        ("pgp_public_key", "ssh-rsa AAAA", "pgp_public_key: must be ASCII-armored"),
        ("pgp_private_key", "-----BEGIN PGP PUBLIC KEY BLOCK-----", "pgp_private_key"),
        ("admin_email", "admin", "admin_email"),
        ("api_url", "http://apps-apis.google.com", "api_url: must be an https:// URL"),
    ],
)
def test_a_bad_account_is_refused_naming_the_field(sim, pgp_keys, field, value, message):
    with pytest.raises(ConfigError, match=message):
        validate_account("google_account", account(sim, pgp_keys, **{field: value}))


def test_unchanged_secrets_are_not_checked_again(sim, pgp_keys):
    validate_account(
        "google_account",
        account(sim, pgp_keys, service_account_json="******", pgp_private_key="******"),
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"users": ""}, "users"),
        ({"export_every": "30m"}, "export_every: must be at least 1h"),
        ({"daily_request_budget": "101"}, "daily_request_budget"),
        ({"package_content": "ALL"}, "package_content"),
    ],
)
def test_bad_input_parameters_are_refused(params, message):
    with pytest.raises(ConfigError, match=message):
        AuditInputConfig.from_params({"account": "g", "users": "alice", **params})
