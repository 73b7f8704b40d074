"""Run the sense_listener service in-process, as `run(InputRun)` is run, for service tests.

Real TLS with certificates from the harness's TestCA, real sockets on 127.0.0.1,
the KV store replaced by a MemoryCheckpointStore that outlives a listener (so a
restart sees what the previous run remembered) and the event stream by a ListSink.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from harness.certs import TestCA, client_ssl_context
from mailsec.core.checkpoint import MemoryCheckpointStore
from mailsec.core.events import ListSink
from mailsec.core.runtime import InputRun
from mailsec.sense import service
from mailsec.sense.server import Limits
from sense.sender import SenseSender

KEY_NAME = "X-Sense-Key"
KEY_VALUE = "s3nse-test-key-0b9d"  # a test secret: the secret scan looks for it


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Pki:
    ca: TestCA
    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, directory: Path) -> Pki:
        ca = TestCA.create("Sense listener test CA")
        cert, key = ca.issue_server(("localhost", "127.0.0.1")).write(directory, "listener")
        return cls(ca, cert, key)


@dataclass
class Stores:
    """What survives a listener restart: the KV store."""

    collections: dict = field(default_factory=dict)

    def open(self, name: str) -> MemoryCheckpointStore:
        return self.collections.setdefault(name, MemoryCheckpointStore())


class RunningListener:
    def __init__(
        self,
        pki: Optional[Pki],
        stores: Stores,
        *,
        params: Optional[dict] = None,
        limits: Optional[Limits] = None,
        sink=None,
        name: str = "sense_test",
    ) -> None:
        self.pki = pki
        self.port = free_port()
        self.params = {
            "port": str(self.port),
            "bind_address": "127.0.0.1",
            "api_key_name": KEY_NAME,
            "api_key_value": "******",
            "index": "sense",
        }
        if pki is not None:
            self.params.update(tls_cert_file=str(pki.cert_file), tls_key_file=str(pki.key_file))
        else:
            self.params["tls"] = "false"
        self.params.update(params or {})
        self.sink = sink or ListSink()
        self.stop = threading.Event()
        self.logger = logging.getLogger(f"test.sense.{name}.{self.port}")
        self.run = InputRun(
            input_type="sense_listener",
            name=name,
            params=self.params,
            logger=self.logger,
            sink=self.sink,
            checkpoints=stores.open("ta_mailsec_sense_listener_checkpoints"),
            load_account=lambda tab, account: {},
            open_store=stores.open,
            input_secrets=lambda: {"api_key_value": KEY_VALUE},
            stop=self.stop,
            index="sense",
        )
        self.limits = limits
        self.server = None
        self.receiver = None
        self.error: Optional[BaseException] = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            self.receiver = service.listen(
                self.run, limits=self.limits, on_listening=self._on_listening
            )
        except BaseException as error:
            self.error = error
            self._ready.set()

    def _on_listening(self, server) -> None:
        self.server = server
        self._ready.set()

    def start(self) -> RunningListener:
        self._thread.start()
        self._ready.wait(10)
        if self.error is not None:
            raise self.error
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.pki else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{self.params.get('path', '/sense')}"

    def client_context(self):
        return client_ssl_context(self.pki.ca) if self.pki else None

    def sender(self, **kwargs) -> SenseSender:
        kwargs.setdefault("key_name", KEY_NAME)
        kwargs.setdefault("key_value", KEY_VALUE)
        return SenseSender(self.url, ssl_context=self.client_context(), **kwargs)

    def connect(self) -> socket.socket:
        """A raw connection (TLS when the listener speaks it) for byte-level tests."""
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        if self.pki is None:
            return raw
        return self.client_context().wrap_socket(raw, server_hostname="localhost")

    def finish(self, timeout: float = 15) -> None:
        self.stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the listener did not stop"
        if self.error is not None:
            raise self.error

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def events(self) -> list:
        return self.sink.events
