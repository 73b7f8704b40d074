"""Save-time check of a google_account's PGP keys, with the real gpg.

Google encrypts every export to the uploaded public key, which must be RSA with
encryption capability (docs/audit_export.md, "PGP key set-up"); any other key makes
every export end in ERROR and spends the domain's budget. So before the account is
saved, the keys given are imported into a throw-away GnuPG home (removed with its
gpg-agent afterwards) and:

- the public key must be an RSA key whose encryption (sub)keys are RSA and usable
  (not expired, not revoked);
- the private key must be a secret key matching the public key (same fingerprint)
  and unlock with the passphrase: a probe encrypted to it decrypts.

A field left unchanged on edit (`******`) was checked when it was saved; the checks
needing it are skipped. An account without PGP keys (only Vault uses it) is not checked.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from typing import Optional

from mailsec.audit.decrypt import GnupgSession, _key_unusable
from mailsec.core.params import MASKED, ConfigError

RSA_ALGORITHMS = ("1", "2", "3")  # RFC 4880 9.1: RSA, RSA encrypt-only, RSA sign-only
RSA_ENCRYPTING = ("1", "2")
MAKE_KEY = (
    "make an RSA key that can encrypt (gpg --full-generate-key, 'RSA and RSA', 3072 or "
    "4096 bits) and paste gpg --armor --export"
)


def _given(value: Optional[str]) -> Optional[str]:
    if value is None or not value.strip() or value == MASKED:
        return None
    return value


def check_pgp_keys(
    public_key: Optional[str],
    private_key: Optional[str],
    passphrase: Optional[str],
    gpgbinary: str = "gpg",
) -> None:
    """Raise ConfigError naming the field and the fix when a given key is unusable."""
    public_key, private_key = _given(public_key), _given(private_key)
    if public_key is None and private_key is None:
        return
    unlock = passphrase != MASKED  # an unchanged passphrase cannot be tried
    workdir = tempfile.mkdtemp(prefix="ta_mailsec_keycheck_")
    try:
        with GnupgSession(None, None, workdir, gpgbinary=gpgbinary) as session:
            gpg = session.gpg
            public_fpr = _check_public(gpg, public_key) if public_key else None
            if private_key is not None:
                if not getattr(gpg.import_keys(private_key), "sec_imported", 0):
                    raise ConfigError(
                        "pgp_private_key",
                        "gpg did not import a secret key from it; paste the ASCII-armored "
                        "private key (gpg --armor --export-secret-keys)",
                    )
                secret = gpg.list_keys(secret=True)
                fingerprints = {key["fingerprint"] for key in secret}
                if public_fpr is not None and public_fpr not in fingerprints:
                    raise ConfigError(
                        "pgp_private_key",
                        "is not the private part of pgp_public_key (their fingerprints differ); "
                        "export both from one key: gpg --armor --export-secret-keys <key id>",
                    )
                if unlock:
                    _check_unlocks(gpg, public_fpr or secret[0]["fingerprint"], passphrase)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _check_public(gpg, public_key: str) -> str:
    imported = gpg.import_keys(public_key)
    fingerprints = [f for f in (getattr(imported, "fingerprints", None) or []) if f]
    if getattr(imported, "sec_imported", 0):
        raise ConfigError(
            "pgp_public_key", "holds a private key: paste gpg --armor --export <key id> here"
        )
    if len(set(fingerprints)) != 1:
        raise ConfigError(
            "pgp_public_key",
            f"gpg found {len(set(fingerprints))} public keys in it, Google needs exactly one: "
            "paste gpg --armor --export <key id>",
        )
    (key,) = [k for k in gpg.list_keys() if k["fingerprint"] == fingerprints[0]]
    if key.get("algo") not in RSA_ALGORITHMS:
        raise ConfigError(
            "pgp_public_key", f"is not an RSA key (OpenPGP algorithm {key.get('algo')}): {MAKE_KEY}"
        )
    encrypting = []
    if "e" in key.get("cap", ""):  # the primary key's own usage (lower case)
        encrypting.append(key.get("algo"))
    for info in (key.get("subkey_info") or {}).values():
        if "e" in info.get("cap", "") and info.get("trust") not in ("e", "r"):
            encrypting.append(info.get("algo"))
    if not encrypting or "E" not in key.get("cap", ""):
        raise ConfigError(
            "pgp_public_key",
            f"has no usable encryption key (expired, revoked or sign-only): {MAKE_KEY}",
        )
    if any(algo not in RSA_ENCRYPTING for algo in encrypting):
        raise ConfigError(
            "pgp_public_key",
            f"encrypts with a non-RSA subkey (OpenPGP algorithms {sorted(set(encrypting))}): "
            + MAKE_KEY,
        )
    return key["fingerprint"]


def _check_unlocks(gpg, fingerprint: str, passphrase: Optional[str]) -> None:
    probe = secrets.token_hex(16)
    sealed = gpg.encrypt(probe, [fingerprint], always_trust=True, armor=True)
    if not sealed.ok:
        raise ConfigError(
            "pgp_private_key", f"gpg cannot encrypt to this key ({sealed.status}): {MAKE_KEY}"
        )
    opened = gpg.decrypt(str(sealed), passphrase=passphrase or None, always_trust=True)
    if opened.ok and str(opened) == probe:
        return
    if _key_unusable(opened, passphrase_given=bool(passphrase)):
        if not passphrase:
            raise ConfigError(
                "pgp_passphrase", "is required: pgp_private_key is protected by a passphrase"
            )
        raise ConfigError(
            "pgp_passphrase",
            "does not unlock pgp_private_key: enter the passphrase of that key "
            "(empty when the key has none)",
        )
    raise ConfigError("pgp_private_key", f"gpg could not use it to decrypt ({opened.status})")
