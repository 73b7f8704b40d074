"""Local validation: the rules Release Manager applies, checked before any call.

A request RM would refuse is reported with RM's own code and never sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Recipients:
    addresses: tuple[str, ...]
    changed: bool  # trimming or lower-casing altered at least one entry

    @property
    def domains(self) -> list[str]:
        return sorted({a.rpartition("@")[2] for a in self.addresses if "@" in a})


def normalise_recipients(raw: Optional[str]) -> Recipients:
    """Split To on commas (and semicolons), trim, lower-case, drop empty entries."""
    entries = (raw or "").replace(";", ",").split(",")
    addresses = []
    changed = False
    for entry in entries:
        address = entry.strip().lower()
        if not address:
            continue
        changed = changed or address != entry.strip()
        addresses.append(address)
    return Recipients(tuple(addresses), changed)


def is_blank(value: Optional[str]) -> bool:
    return value is None or not value.strip()


def violation(
    recipients: Sequence[str], subject: Optional[str], text: Optional[str], html: Optional[str]
) -> Optional[str]:
    """The code RM would answer for this mail, or None when RM would accept it."""
    if not recipients:
        return "RECIPIENTS_MISSING"
    if any("@" not in address for address in recipients):
        return "RECIPIENTS_ADDRESS_MISS_AT_SIGN"
    if any(address != address.lower() for address in recipients):
        return "RECIPIENTS_ADDRESS_MUST_BE_LOWCASE"
    if is_blank(subject):
        return "SUBJECT_IS_NOT_ALLOWED_TO_BE_EMPTY"
    if is_blank(text) and is_blank(html):
        return "TEXT_OR_HTML_MUST_BE_SET"
    return None
