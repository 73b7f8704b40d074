"""storage/passwords as UCC and solnlib lay it out, and targeted look-ups in it.

One value (UCC: a JSON object of a stanza's encrypted fields) is kept in 255-character
chunks named `<user>``splunk_cred_sep``<n>`, ended by an end-marker chunk. Standard
library only: shared by the solnlib reader (modular inputs) and the lean reader (the
alert action).

A look-up asks splunkd for one realm and one user (`search=realm=<r> username=<u>`),
not for every value of the add-on: a process reads only the secrets it uses
(docs/security.md). splunkd's filter matches substrings, so the answer is filtered
again here on the exact realm and user.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Optional

CRED_SEP = "``splunk_cred_sep``"
CRED_END_MARK = (
    "``splunk_cred_sep``S``splunk_cred_sep``P``splunk_cred_sep``L``splunk_cred_sep``"
    "U``splunk_cred_sep``N``splunk_cred_sep``K``splunk_cred_sep``"
)
CRED_CHUNK = 255  # splunkd encrypts at most 255 characters per entry (solnlib)

# A user name splunkd's search filter takes as one term (no space, no `=`, no `*`).
_PLAIN_TERM = re.compile(r"^[^\s=*\\\"]+$")


def split_chunk(username: str) -> tuple[str, Optional[int]]:
    """`rm1``splunk_cred_sep``3` -> ("rm1", 3); a name without a chunk number -> (name, None)."""
    base, sep, number = username.rpartition(CRED_SEP)
    if sep and base and number.isdigit():
        return base, int(number)
    return username, None


def chunked(user: str, value: str) -> list[tuple[int, str, str]]:
    """(index, entry user name, piece) of each chunk a value is stored as, end marker
    included, as solnlib's CredentialManager.set_password writes them."""
    pieces = [value[i : i + CRED_CHUNK] for i in range(0, len(value), CRED_CHUNK)]
    pieces.append(CRED_END_MARK)
    return [(n, f"{user}{CRED_SEP}{n}", piece) for n, piece in enumerate(pieces, start=1)]


def search_filter(realm: str, user: Optional[str] = None) -> str:
    """The `search=` value for one realm, narrowed to one user where splunkd can."""
    if user and _PLAIN_TERM.match(user):
        return f"realm={realm} username={user}"
    return f"realm={realm}"


def belongs_to(content: Mapping, realm: str, user: Optional[str] = None) -> bool:
    """An entry (its content) is of `realm` and, when given, of `user` (any chunk)."""
    if content.get("realm") != realm:
        return False
    return user is None or split_chunk(content.get("username") or "")[0] == user


def reassemble(entries: Iterable[Mapping]) -> dict[tuple[str, str], str]:
    """{(realm, user): clear value} from storage/passwords entries' content, as
    solnlib's CredentialManager reads them: chunks joined in order up to the end
    marker (chunks after it are left over from a longer older value); an entry
    without a chunk number (an older solnlib's) counts unless chunks exist."""
    chunks: dict[tuple[str, str], dict[int, str]] = {}
    whole: dict[tuple[str, str], str] = {}
    for content in entries:
        realm = content.get("realm") or ""
        user, index = split_chunk(content.get("username") or "")
        clear = content.get("clear_password") or ""
        if index is None:
            whole[(realm, user)] = clear
        else:
            chunks.setdefault((realm, user), {})[index] = clear
    for key, parts in chunks.items():
        joined = []
        for index in sorted(parts):
            if parts[index] == CRED_END_MARK:
                break
            joined.append(parts[index])
        whole[key] = "".join(joined)
    return whole
