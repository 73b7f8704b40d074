"""The domain's daily export budget, shared by every input of the domain.

Google allows 100 export requests a day for a whole domain. The count lives in a
KV-store collection shared by all inputs (`ta_mailsec_audit_budget`), as one
reservation record per request: key `<domain>|<UTC day>|<slot>`, slots 0..99.
The KV store has no atomic increment, but it refuses to insert a second record
with an existing key (HTTP 409): an input claims a slot by inserting its key and
re-reads it to confirm it is the owner (mailsec.core.kvclaim). Two inputs, or two
processes, can never hold the same slot, so together they never make more requests than there are
slots. An input's `daily_request_budget` is the highest slot it may claim.

A slot is claimed before the request is sent and never given back: a request
that failed after leaving may still have counted at Google. The records of days
before yesterday (UTC) count for nothing: `prune` deletes them, in one request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Callable, Optional, Protocol

from mailsec.core.kvclaim import ClaimStore, DomainClaims
from mailsec.core.timeutil import UTC

COLLECTION = "ta_mailsec_audit_budget"
DOMAIN_DAILY_LIMIT = 100


class BudgetStore(ClaimStore, Protocol):
    def delete_range(self, low: str, high: str) -> Any:
        """Delete every record with low <= key < high."""
        ...


class DailyBudget(DomainClaims):
    CEILING = DOMAIN_DAILY_LIMIT
    _store: BudgetStore

    def __init__(
        self,
        store: BudgetStore,
        domain: str,
        limit: int,
        owner: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(store, domain, limit, owner, clock)
        self._hint: dict[str, int] = {}  # per day: slots below are known taken

    def day(self) -> str:
        return datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%d")

    def _key(self, day: str, slot: Any) -> str:
        return f"{self._domain}|{day}|{slot}"

    def reserve(self, purpose: str) -> Optional[str]:
        """Claim one slot of today; its key, or None when the budget is spent."""
        day = self.day()
        if self.exhausted_by_google(day):
            return None
        return self._claim_first(self._slots_to_try(day), purpose)

    def _slots_to_try(self, day: str) -> Iterator[str]:
        for slot in range(self._hint.get(day, 0), self.limit):
            self._hint[day] = slot + 1  # taken once tried, by this input or another
            yield self._key(day, f"{slot:03d}")

    def prune(self) -> str:
        """Delete this domain's records of the days before yesterday (kept: yesterday,
        for a run that started before midnight UTC); the first day kept."""
        kept = (datetime.fromtimestamp(self._clock(), UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
        self._store.delete_range(f"{self._domain}|", self._key(kept, ""))
        return kept

    def mark_exhausted_by_google(self) -> None:
        """Google refused a request for quota: no input of the domain tries again today."""
        self._store.insert(
            self._key(self.day(), "exhausted"), {"owner": self._owner, "at": self._clock()}
        )

    def exhausted_by_google(self, day: Optional[str] = None) -> bool:
        return self._store.get(self._key(day or self.day(), "exhausted")) is not None
