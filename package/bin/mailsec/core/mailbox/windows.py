"""Per-user export windows: which time windows each user still needs exported.

Shared by the mailbox watchers (audit_export, vault_export). The state is a plain
dict inside the input's checkpoint, one entry per user name:

    {"next": "<begin of the next new window>",
     "redo": [[begin, end], ...],          # windows to request again
     "retries": {"begin|end": n, ...}}     # only for windows in `redo`

Window bounds are text in the watcher's own format (`fmt`/`parse`, by default the
Email Audit API's `YYYY-MM-DD HH:MM` UTC): they are compared after `parse`, stored
as `fmt` gives them. Windows follow each other with no gap and no overlap: a new
window begins where the previous one ended, and a window leaves the plan only when
an export was created for it (`created`) or it was given up for good (`retry_later`
or `redo` returned None), which the caller reports with an `error` event
(docs/audit_export.md, "Behaviour on errors").

A watcher of whole UTC days (vault_export) passes a `first_begin` at midnight UTC
and a whole number of days as `every`: every window then stays day-aligned.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable, Optional

from mailsec.core.timeutil import format_google, parse_google

Window = tuple  # (begin, end), both as `fmt` writes them


def _label(begin: str, end: str) -> str:
    return f"{begin}|{end}"


class UserWindows:
    """The window plan of every user of one input.

    `users_state` is the checkpoint's dict (changed in place: the caller saves the
    checkpoint after each call that changed it). `first_begin()` gives the first
    window's begin for a user seen for the first time; `now()` the current time
    (aware, UTC). A window is requested again at most `max_retries` times.
    """

    def __init__(
        self,
        users_state: dict,
        every: timedelta,
        first_begin: Callable[[], datetime],
        now: Callable[[], datetime],
        max_retries: int,
        fmt: Callable[[datetime], str] = format_google,
        parse: Callable[[str], datetime] = parse_google,
    ) -> None:
        self._users = users_state
        self._every = every
        self._first_begin = first_begin
        self._now = now
        self.max_retries = max_retries
        self._fmt = fmt
        self._parse = parse

    def user(self, user: str) -> dict:
        """The user's entry, made on first sight (its first window at `first_begin()`)."""
        if user not in self._users:
            self._users[user] = {"next": self._fmt(self._first_begin()), "redo": []}
        return self._users[user]

    def due(self, user: str) -> list:
        """The windows to request now, oldest first: those to redo, then every new
        window that has ended by now."""
        state = self.user(user)
        self._prune(state)
        windows = [tuple(window) for window in state["redo"]]
        begin = self._parse(state["next"])
        now = self._now()
        while begin + self._every <= now:
            windows.append((self._fmt(begin), self._fmt(begin + self._every)))
            begin += self._every
        return windows

    def created(self, user: str, begin: str, end: str) -> int:
        """An export now exists for the window: it leaves the plan. Returns how many
        times it had been requested again before (kept by the caller with the request,
        for `redo`)."""
        state = self.user(user)
        retries = state.get("retries", {}).pop(_label(begin, end), 0)
        self._take(state, begin, end)
        return retries

    def retry_later(self, user: str, begin: str, end: str) -> Optional[int]:
        """The window's creation was refused: it is requested again on a later run,
        while the windows after it go on. Returns the retry number, or None when the
        window has been refused `max_retries` + 1 times and is given up for good."""
        state = self.user(user)
        self._take(state, begin, end)
        retries = state.setdefault("retries", {})
        label = _label(begin, end)
        done = retries.pop(label, 0)
        if done >= self.max_retries:
            return None
        retries[label] = done + 1
        state["redo"].append([begin, end])
        return done + 1

    def redo(self, user: str, begin: str, end: str, retries: int) -> Optional[int]:
        """An export of the window failed at the vendor (it had been requested again
        `retries` times before): the window is requested again on a later run.
        Returns the retry number, or None when it is given up for good."""
        if retries >= self.max_retries:
            return None
        state = self.user(user)
        if [begin, end] not in state["redo"]:
            state["redo"].append([begin, end])
        state.setdefault("retries", {})[_label(begin, end)] = retries + 1
        return retries + 1

    def _take(self, state: dict, begin: str, end: str) -> None:
        """Take the window out of the plan: out of `redo`, or `next` moved past it."""
        window = [begin, end]
        if window in state["redo"]:
            state["redo"].remove(window)
        elif self._parse(end) > self._parse(state["next"]):
            state["next"] = end

    @staticmethod
    def _prune(state: dict) -> None:
        """Retry counts are kept only for windows still to redo (checkpoints written
        before this rule kept every window's count for ever)."""
        retries = state.get("retries")
        if retries:
            waiting = {_label(*window) for window in state["redo"]}
            for label in [label for label in retries if label not in waiting]:
                del retries[label]
