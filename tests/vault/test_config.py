"""vault_export's parameters and the google_account it shares with audit_export."""

from __future__ import annotations

import pytest

from mailsec.accounts import validate_account
from mailsec.core.params import ConfigError
from mailsec.vault.config import VaultInputConfig


def test_an_account_without_pgp_keys_serves_vault(sim):
    account = validate_account("google_account", sim.account_fields())
    assert account.pgp_public_key is None
    with pytest.raises(ConfigError, match=r"^pgp_public_key: is required by audit_export"):
        account.require_pgp()


def test_one_pgp_key_without_the_other_is_refused(sim):
    fields = dict(sim.account_fields(), pgp_private_key="-----BEGIN PGP PRIVATE KEY BLOCK-----")
    with pytest.raises(ConfigError, match=r"^pgp_public_key:"):
        validate_account("google_account", fields)


@pytest.mark.parametrize("field", ["vault_url", "storage_url"])
def test_vault_and_storage_urls_must_be_https(sim, field):
    fields = dict(sim.account_fields(), **{field: "http://vault.example"})
    with pytest.raises(ConfigError, match=rf"^{field}: must be an https://"):
        validate_account("google_account", fields)


def test_defaults():
    config = VaultInputConfig.from_params({"account": "g", "users": "alice, bob,alice"})
    assert config.users == ("alice", "bob")
    assert (config.data_scope, config.region, config.exclude_drafts) == ("ALL_DATA", "ANY", True)
    assert config.max_exports_in_progress == 5 and config.delete_after_download
    assert config.export_every_days == 1 and config.matter_id is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"export_every": "36h"}, "export_every"),
        ({"max_exports_in_progress": "0"}, "max_exports_in_progress"),
        ({"first_begin_date": "2024-05-01T10:00:00Z"}, "first_begin_date"),
        ({"matter_id": "../x"}, "matter_id"),
        ({"data_scope": "ALL"}, "data_scope"),
    ],
)
def test_bad_values_name_the_field(params, field):
    with pytest.raises(ConfigError, match=f"^{field}:"):
        VaultInputConfig.from_params({"account": "g", "users": "alice", **params})
