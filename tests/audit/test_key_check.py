"""Save-time check of the PGP keys with the real gpg (issue 10, point 3): Google
encrypts exports only to an RSA key that can encrypt, and the input can read them
only with the matching private key and its passphrase."""

from __future__ import annotations

import subprocess
import tempfile

import pytest

from audit.conftest import PASSPHRASE
from mailsec.accounts import validate_account
from mailsec.core.params import ConfigError


def _export(home: str, uid: str, passphrase: str) -> tuple:
    base = ["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback"]
    public = subprocess.run([*base, "--armor", "--export", uid], check=True, capture_output=True)
    private = subprocess.run(
        [*base, "--passphrase", passphrase, "--armor", "--export-secret-keys", uid],
        check=True,
        capture_output=True,
    )
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False)
    return public.stdout.decode(), private.stdout.decode()


def _make(primary: str, usage: str, subkey, passphrase: str) -> tuple:
    """(public, private) of a key made with gpg --quick-gen-key [--quick-add-key]."""
    with tempfile.TemporaryDirectory(prefix="kc_", dir="/tmp") as home:
        base = ["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback"]
        uid = f"Key {primary} <k@example.com>"
        subprocess.run(
            [*base, "--passphrase", passphrase, "--quick-gen-key", uid, primary, usage, "never"],
            check=True,
            capture_output=True,
        )
        if subkey:
            listing = subprocess.run(
                [*base, "--with-colons", "--list-keys", uid], check=True, capture_output=True
            ).stdout.decode()
            fpr = next(line.split(":")[9] for line in listing.splitlines() if line[:4] == "fpr:")
            subprocess.run(
                [*base, "--passphrase", passphrase, "--quick-add-key", fpr, *subkey, "never"],
                check=True,
                capture_output=True,
            )
        return _export(home, uid, passphrase)


@pytest.fixture(scope="module")
def odd_keys() -> dict:
    return {
        "ecc": _make("ed25519", "sign", ("cv25519", "encr"), "pw"),
        "rsa_sign_only": _make("rsa2048", "sign", None, "pw"),
        "rsa_with_ecdh": _make("rsa2048", "sign", ("cv25519", "encr"), "pw"),
    }


def fields(sim, public, private, passphrase=PASSPHRASE) -> dict:
    return sim.account_fields(public, private, passphrase)


def test_a_good_pair_with_its_passphrase_passes(sim, pgp_keys):
    validate_account("google_account", fields(sim, *pgp_keys))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("ecc", "pgp_public_key: is not an RSA key"),
        ("rsa_sign_only", "pgp_public_key: has no usable encryption key"),
        ("rsa_with_ecdh", "pgp_public_key: encrypts with a non-RSA subkey"),
    ],
)
def test_a_public_key_google_cannot_use_is_refused(sim, odd_keys, kind, message):
    public, private = odd_keys[kind]
    with pytest.raises(ConfigError, match=message) as refused:
        validate_account("google_account", fields(sim, public, private, "pw"))
    assert "gpg --full-generate-key" in str(refused.value)  # the fix


def test_a_private_key_of_another_pair_is_refused(sim, pgp_keys, other_pgp_keys):
    with pytest.raises(ConfigError, match="pgp_private_key: is not the private part"):
        validate_account("google_account", fields(sim, pgp_keys[0], other_pgp_keys[1], "x"))


def test_a_wrong_passphrase_is_refused(sim, pgp_keys):
    with pytest.raises(ConfigError, match="pgp_passphrase: does not unlock pgp_private_key"):
        validate_account("google_account", fields(sim, *pgp_keys, passphrase="not it"))


def test_a_missing_passphrase_is_refused(sim, pgp_keys):
    with pytest.raises(ConfigError, match="pgp_passphrase: is required"):
        validate_account("google_account", fields(sim, *pgp_keys, passphrase=""))


def test_a_private_key_in_the_public_field_is_refused(sim, pgp_keys):
    private_as_public = pgp_keys[1].replace("PRIVATE KEY BLOCK", "PUBLIC KEY BLOCK")
    with pytest.raises(ConfigError, match="pgp_public_key"):
        validate_account("google_account", fields(sim, private_as_public, pgp_keys[1]))


def test_on_edit_only_the_fields_given_are_checked(sim, pgp_keys, odd_keys):
    # the private key and passphrase unchanged (******): the new public key is checked
    validate_account("google_account", fields(sim, pgp_keys[0], "******", passphrase="******"))
    with pytest.raises(ConfigError, match="pgp_public_key: is not an RSA key"):
        validate_account(
            "google_account", fields(sim, odd_keys["ecc"][0], "******", passphrase="******")
        )


def test_no_keys_at_all_is_not_checked():
    """An account used only by vault_export has no PGP keys (docs/vault_export.md)."""
    from mailsec.audit.keycheck import check_pgp_keys

    check_pgp_keys(None, None, None)
    check_pgp_keys("", "", "")
