"""The frame both mailbox watchers' services share (audit_export, vault_export): the
clocks, the checkpoint (KV store, keyed by input name; `users` holds the window plan,
`requests` the open exports), the HTTP clients, the file indexer and the loop that
requests the due windows (docs/audit_export.md, docs/vault_export.md)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Callable, Optional

from mailsec.core.http import HttpClient
from mailsec.core.mailbox.files import FileIndexer
from mailsec.core.mailbox.lifecycle import Lifecycle
from mailsec.core.runtime import InputRun
from mailsec.core.timeutil import UTC

STATE_VERSION = 1


class MailboxWatcher:
    """A subclass sets `config` (with `include_body` and `body_max_bytes`) and
    `account` (with `ca_bundle`), and has `_create_one(user, begin, end)`."""

    config: Any
    account: Any
    lifecycle: Lifecycle
    users: tuple
    windows: Any

    def __init__(
        self,
        run: InputRun,
        clock: Optional[Callable[[], float]] = None,
        sleep: Optional[Callable[[float], Any]] = None,
    ) -> None:
        self.run_ = run
        self.log = run.logger
        # Tests drive time through extras; in production a wait ends early when the
        # input is told to stop.
        self.clock = clock or run.extras.get("clock") or time.time
        self.sleep = sleep or run.extras.get("sleep") or run.stop.wait
        self.state: dict = {}

    # -- state --------------------------------------------------------------
    def _load_state(self) -> dict:
        state = self.run_.checkpoints.get(self.run_.name) or {}
        if state.get("v") != STATE_VERSION:
            state = {"v": STATE_VERSION}
        state.setdefault("users", {})
        state.setdefault("requests", {})
        return state

    def _save(self) -> None:
        self.run_.checkpoints.save(self.run_.name, self.state)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- parts --------------------------------------------------------------
    def _http(self) -> HttpClient:
        return HttpClient(
            ca_bundle_pem=self.account.ca_bundle,
            proxy=self.run_.proxy,
            logger=self.log,
            sleep=lambda seconds: self.sleep(seconds),
        )

    def _file_indexer(self, api: str, max_attempts: int) -> FileIndexer:
        return FileIndexer(
            self.lifecycle,
            self._save,
            self.run_.check_stop,
            self.log,
            api,
            self.config.include_body,
            self.config.body_max_bytes,
            max_attempts,
        )

    # -- requesting windows -------------------------------------------------
    def _create_due_exports(self) -> None:
        for user in self.users:
            for begin, end in self.windows.due(user):
                self.run_.check_stop()
                if not self._create_one(user, begin, end):
                    return

    def _create_one(self, user: str, begin: str, end: str) -> bool:
        """Request one window; False when no more may be requested in this run."""
        raise NotImplementedError
