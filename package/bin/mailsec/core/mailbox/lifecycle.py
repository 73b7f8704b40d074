"""Lifecycle events of mailbox exports (sourcetype `google:workspace:audit:export`).

Shared by the mailbox watchers. One event per change in an export's life: `created`,
`status`, `downloaded`, `decrypted` (audit_export) or `extracted` (vault_export),
`deleted`, `expired`, `warning`, `budget_exhausted`, and `error` for every failure
a user should see (docs/audit_export.md, "Events").

A request is the watcher's checkpoint record of one export, a dict with at least
`id`, `user` (the full address), `begin` and `end` (the window); `status`,
`number_of_files` and `completed` are reported when present. A lifecycle event
without a request (a refused creation, the budget) passes `request=None` and its
own fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Callable, Optional

from mailsec.core.events import Event, EventSink, build_event
from mailsec.core.timeutil import UTC

EXPORT_SOURCETYPE = "google:workspace:audit:export"


class Lifecycle:
    """Builds and writes one input's lifecycle events.

    `api` names the vendor API (`audit`, `vault`) in every event. `id_namespace`,
    when given, starts every event's natural key, so that two watchers' events for
    the same user and window never share an `event_id`; audit_export passes none
    (its ids stay what they were before vault_export existed).
    """

    def __init__(
        self,
        sink: EventSink,
        domain: str,
        input_name: str,
        index: Optional[str],
        clock: Callable[[], float],
        api: str,
        id_namespace: Sequence[Any] = (),
    ) -> None:
        self.sink = sink
        self.domain = domain
        self.input_name = input_name
        self.index = index
        self.clock = clock
        self.api = api
        self._key_head = list(id_namespace)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def event(
        self, action: str, request: Optional[dict], detail: Any = None, **fields: Any
    ) -> Event:
        """One lifecycle event. `detail` tells apart events of one request and
        action (a file index, a status): it is part of the natural key, not a field."""
        data: dict = {
            "action": action,
            "domain": self.domain,
            "input": self.input_name,
            "api": self.api,
        }
        if request is not None:
            data.update(
                request_id=request["id"],
                user=request["user"],
                status=request.get("status"),
                number_of_files=request.get("number_of_files", 0),
                begin_date=request["begin"],
                end_date=request["end"],
            )
            if request.get("completed"):
                data["completed_date"] = request["completed"]
        data.update(fields)
        key = [*self._key_head, self.domain, request["id"] if request else None, action, detail]
        return build_event(EXPORT_SOURCETYPE, self.now(), data, key, index=self.index)

    def emit(self, *events: Event) -> None:
        self.sink.write(list(events))

    def window_given_up(
        self, user: str, begin: str, end: str, attempts: int, reason: str, request_id: Any = None
    ) -> None:
        """The `error` event (with `given_up=true`) of a window no export will ever
        cover: a gap, shown on the health dashboard, that only a person can fill."""
        self.emit(
            self.event(
                "error",
                None,
                ("window_given_up", user, begin, end),
                user=user,
                begin_date=begin,
                end_date=end,
                request_id=request_id,
                attempts=attempts,
                given_up=True,
                error=f"window {begin}..{end} of {user} given up after {attempts} "
                f"attempts ({reason}): no export covers it, its messages are not indexed",
            )
        )
