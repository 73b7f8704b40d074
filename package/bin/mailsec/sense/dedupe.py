"""Which Sense reports a listener already indexed, kept across restarts.

A `messageId` is remembered for 48 to 72 hours, across restarts
(docs/sense_listener.md). The ledger keeps one KV-store record per input and UTC day
(`<input>.<YYYY-MM-DD>`), mapping a report's key to the epoch it was received.
A lookup consults the current day and the `RETAIN_DAYS - 1` days before it, all held
in memory, so a repeat is found without a KV-store round trip; recording a report
rewrites only today's record. Records older than that window are deleted as days
roll over, so the collection never grows past `RETAIN_DAYS` records per input.

Sense posts every 5 minutes per org and environment (288 reports a day), so a day's
record stays small; `max_per_day` bounds memory and record size whatever arrives.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import date, datetime, timedelta
from typing import Callable, Optional

from mailsec.core.checkpoint import CheckpointStore
from mailsec.core.timeutil import UTC, utcnow

COLLECTION = "ta_mailsec_sense_message_ids"
# Today and the two days before: a report is remembered between 48 and 72 hours.
RETAIN_DAYS = 3
MAX_PER_DAY = 20_000
_STARTUP_SWEEP_DAYS = 7


def message_key(parts) -> str:
    material = json.dumps(list(parts), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def forget_input(store: CheckpointStore, input_name: str, today: Optional[date] = None) -> None:
    """Delete an input's records (when the input is deleted): a new input with the
    same name must not answer `duplicate` to reports the old one received."""
    today = today or utcnow().astimezone(UTC).date()
    for n in range(RETAIN_DAYS + _STARTUP_SWEEP_DAYS):
        store.delete(f"{input_name}.{(today - timedelta(days=n)).isoformat()}")


def forget_listener(open_store: Callable[[str], CheckpointStore], input_name: str) -> None:
    """What the listener's REST handler hands the adapter that removes an input:
    `open_store(collection)` gives a store over a KV-store collection."""
    forget_input(open_store(COLLECTION), input_name)


class MessageLedger:
    def __init__(
        self,
        store: CheckpointStore,
        input_name: str,
        *,
        logger: Optional[logging.Logger] = None,
        clock: Callable[[], datetime] = utcnow,
        retain_days: int = RETAIN_DAYS,
        max_per_day: int = MAX_PER_DAY,
    ) -> None:
        self._store = store
        self._input = input_name
        self._logger = logger or logging.getLogger(__name__)
        self._clock = clock
        self._retain_days = retain_days
        self._max_per_day = max_per_day
        self._days: dict[date, dict] = {}
        self._current: Optional[date] = None

    def _record_key(self, day: date) -> str:
        return f"{self._input}.{day.isoformat()}"

    def _roll(self) -> date:
        """Load the window's records on first use and when the UTC day changes."""
        today = self._clock().astimezone(UTC).date()
        if today == self._current:
            return today
        window = {today - timedelta(days=n) for n in range(self._retain_days)}
        for day in list(self._days):
            if day not in window:
                del self._days[day]
        for day in sorted(window):
            if day not in self._days:
                self._days[day] = self._load(day)
        # Records that just left the window; after a restart, a week of them, in case
        # the listener was down while days rolled over.
        passed = (today - self._current).days if self._current else _STARTUP_SWEEP_DAYS
        for n in range(self._retain_days, self._retain_days + max(passed, 0)):
            self._forget(today - timedelta(days=n))
        self._current = today
        return today

    def _load(self, day: date) -> dict:
        try:
            state = self._store.get(self._record_key(day))
        except Exception as error:
            # Without the KV store a restart could index a repeat twice; the events
            # carry a stable event_id, so `dedup event_id` still removes it.
            self._logger.error(
                "action=dedupe_load_failed day=%s error=%r: repeats of that day's reports "
                "are not recognised until the KV store answers",
                day.isoformat(),
                error,
            )
            return {}
        return dict(state) if isinstance(state, dict) else {}

    def _forget(self, day: date) -> None:
        try:
            self._store.delete(self._record_key(day))
        except Exception as error:
            self._logger.warning("action=dedupe_purge_failed day=%s error=%r", day, error)

    def seen(self, key: str) -> bool:
        self._roll()
        return any(key in entries for entries in self._days.values())

    def record(self, key: str) -> bool:
        """Remember a report; False when it could not be saved to the KV store."""
        today = self._roll()
        entries = self._days[today]
        if len(entries) >= self._max_per_day:
            # keep the newest: drop the oldest half rather than refuse to remember
            for old in sorted(entries, key=entries.get)[: self._max_per_day // 2]:
                del entries[old]
            self._logger.warning(
                "action=dedupe_trimmed day=%s kept=%d: more reports than expected in a day",
                today.isoformat(),
                len(entries),
            )
        entries[key] = int(self._clock().timestamp())
        try:
            self._store.save(self._record_key(today), entries)
        except Exception as error:
            self._logger.error(
                "action=dedupe_save_failed error=%r: this report is remembered until the "
                "listener restarts",
                error,
            )
            return False
        return True
