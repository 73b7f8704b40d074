"""What an alert action needs from the Splunk host, as Protocols: its entry script
hands the action an implementation, so the action's logic imports core only
(docs/development.md#layering). `mailsec.adapters.alert.SplunkHomeOutput` is the one
for splunkd.

The action names these for type checking only: it is a new process for every mail,
and every module it imports costs start-up time.
"""

from __future__ import annotations

from typing import Protocol

from mailsec.core.events import Event


class AlertLog(Protocol):
    """The `logging.Logger` calls an action makes."""

    def setLevel(self, level: str) -> None: ...

    def debug(self, message: str, *args) -> None: ...

    def info(self, message: str, *args) -> None: ...

    def warning(self, message: str, *args) -> None: ...

    def error(self, message: str, *args) -> None: ...

    def exception(self, message: str, *args) -> None: ...


class AlertOutput(Protocol):
    """Where an action's outcome goes: its log, and the events it indexes."""

    def log(self, action: str) -> AlertLog: ...

    def write_event(self, event: Event, default_index: str) -> str: ...
