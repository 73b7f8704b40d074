"""Save-time validation of the account tabs, shared by the REST handlers and tests.

An unchanged secret comes back from the edit form as `******`: it was validated
when it was saved, so it is not checked again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable, Optional

from mailsec.audit.config import GoogleAccount
from mailsec.core.http import PEM_CERT_MARKER
from mailsec.core.params import ConfigError
from mailsec.rm.config import RmAccount
from mailsec.ser.config import SerAccount
from mailsec.vault.config import VaultAccount


def _google_account(fields: Mapping[str, Optional[str]]) -> GoogleAccount:
    """One account serves audit_export and vault_export: both readings must hold."""
    VaultAccount.from_fields(fields)
    return GoogleAccount.from_fields(fields)


_PARSERS: dict[str, Callable[[Mapping[str, Optional[str]]], object]] = {
    "ser_account": SerAccount.from_fields,
    "google_account": _google_account,
    "rm_account": RmAccount.from_fields,
}


def validate_account(tab: str, fields: Mapping[str, Optional[str]]) -> object:
    ca_bundle = fields.get("ca_bundle")
    if ca_bundle and ca_bundle.strip() and PEM_CERT_MARKER not in ca_bundle:
        raise ConfigError("ca_bundle", "must be PEM text holding -----BEGIN CERTIFICATE-----")
    account = _PARSERS[tab](fields)
    # an account class may look deeper (parse the key file, open the certificate)
    deep_check = getattr(account, "check", None)
    if deep_check is not None:
        deep_check()
    return account
