"""The input parameters both mailbox watchers have (audit_export, vault_export): the
users, and what of a message body is indexed (docs/audit_export.md,
docs/vault_export.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Optional

from mailsec.core import params as p

BODY_MAX_BYTES = 32 * 1024
# the local part of an address, or a whole address in the account's domain
_USER = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+(@[A-Za-z0-9.-]+)?$")


def users(params: Mapping[str, Optional[str]]) -> tuple:
    """The `users` list, each once, in the order given."""
    names = p.csv_list(params, "users")
    if not names:
        raise p.ConfigError("users", "list at least one user name of the domain, comma-separated")
    for user in names:
        if not _USER.match(user):
            raise p.ConfigError("users", f"{user!r} is not a user name of the domain")
    return tuple(dict.fromkeys(names))


def body_params(params: Mapping[str, Optional[str]]) -> dict:
    """`include_body`, `body_max_bytes` and `index`."""
    return {
        "include_body": p.boolean(params, "include_body", False),
        "body_max_bytes": p.integer(
            params, "body_max_bytes", BODY_MAX_BYTES, minimum=1, maximum=1 << 20
        ),
        "index": p.text(params, "index"),
    }


def user_name(user: str, domain: str) -> str:
    """The local part of a `users` entry; ConfigError when it names another domain."""
    name, _, user_domain = user.partition("@")
    if user_domain and user_domain.lower() != domain:
        raise p.ConfigError("users", f"{user!r} is not in the account's domain {domain}")
    return name
