"""Where splunkd is, taken from what splunkd handed the script."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mailsec import APP_NAME


@dataclass(frozen=True)
class Splunkd:
    server_uri: str
    session_key: str = field(repr=False)
    app: str = APP_NAME

    @property
    def connection(self) -> dict:
        """scheme/host/port for solnlib: without them solnlib 7 looks splunkd up
        through Splunk's own `splunk` package and makes extra REST calls."""
        parts = urlsplit(self.server_uri)
        return {
            "scheme": parts.scheme or "https",
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 8089,
        }
