"""The exports in progress of one domain, shared by every vault_export input of it.

Google allows at most 20 exports in progress across an organisation
(developers.google.com/workspace/vault/limits); each input may hold at most its
`max_exports_in_progress`. The count lives in a KV-store collection shared by all
inputs (`ta_mailsec_vault_slots`), one record per export in progress: key
`<domain>|<slot>`, slots 0..19. The KV store refuses to insert a second record with
an existing key (HTTP 409): an input claims a slot by inserting its key and
re-reading it to confirm it is the owner, so two inputs never hold the same slot.
An input claims only slots below its own maximum, so together the inputs of a
domain never have more exports in progress than the highest maximum among them.

A slot is claimed before the export is requested and given back when the export
leaves IN_PROGRESS (or was refused). Slots an input holds for exports it no longer
knows (a run killed between claim and record) are given back at its next run.
"""

from __future__ import annotations

from typing import Optional, Protocol

from mailsec.core.kvclaim import ClaimStore, DomainClaims

COLLECTION = "ta_mailsec_vault_slots"
ORG_LIMIT = 20


class SlotStore(ClaimStore, Protocol):
    def delete(self, key: str) -> None: ...


class InProgressSlots(DomainClaims):
    CEILING = ORG_LIMIT
    _store: SlotStore

    def _key(self, slot: int) -> str:
        return f"{self._domain}|{slot:02d}"

    def claim(self, purpose: str) -> Optional[str]:
        """One free slot below this input's limit; its key, or None when all are held."""
        return self._claim_first((self._key(slot) for slot in range(self.limit)), purpose)

    def release(self, key: Optional[str]) -> None:
        if key:
            self._store.delete(key)

    def held(self) -> dict:
        """slot key -> record, for every slot of the domain that is held."""
        out = {}
        for slot in range(ORG_LIMIT):
            record = self._store.get(self._key(slot))
            if isinstance(record, dict):
                out[self._key(slot)] = record
        return out

    def release_unknown(self, known: set) -> int:
        """Give back this input's slots whose key is not in `known`; how many."""
        released = 0
        for key, record in self.held().items():
            if record.get("owner") == self._owner and key not in known:
                self._store.delete(key)
                released += 1
        return released
