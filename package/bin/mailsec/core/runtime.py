"""What a service receives for one run of one input stanza.

The adapters build it from splunklib's objects; tests build it directly. Service
code sees only plain Python here, never splunklib.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from mailsec.core.checkpoint import CheckpointStore
from mailsec.core.events import EventSink
from mailsec.core.http import ProxyConfig
from mailsec.core.secrets import SecretCache


class Stopped(Exception):
    """The input was asked to stop (SIGTERM, or splunkd went away): raised at the next
    safe point, after the progress so far was saved."""


@dataclass
class InputRun:
    input_type: str
    name: str
    params: Mapping[str, Optional[str]]
    logger: logging.Logger
    sink: EventSink
    checkpoints: CheckpointStore
    # (account tab, account name) -> the account's fields, secrets decrypted
    load_account: Callable[[str, str], dict]
    # another KV-store collection, e.g. state shared by all inputs of one domain
    open_store: Callable[[str], CheckpointStore]
    # this input's own encrypted fields (such as sense_listener's api_key_value)
    input_secrets: Callable[[], dict] = field(default=lambda: {})
    proxy: Optional[ProxyConfig] = None
    # encrypted cache for short-lived credentials (access tokens), kept across runs
    secret_cache: Optional[SecretCache] = None
    # set on SIGTERM or when splunkd goes away: long-running work stops at the next safe point
    stop: threading.Event = field(default_factory=threading.Event)
    index: Optional[str] = None
    host: Optional[str] = None
    extras: dict[str, Any] = field(default_factory=dict)
    # a private folder for state shared by this add-on's processes on this host (the
    # per-account rate limits); None: nothing is shared
    shared_state_dir: Optional[str] = None

    def check_stop(self) -> None:
        """Raise Stopped when the input was asked to stop."""
        if self.stop.is_set():
            raise Stopped("stop requested")

    @property
    def full_name(self) -> str:
        return f"{self.input_type}://{self.name}"
