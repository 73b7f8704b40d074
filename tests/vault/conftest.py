"""Fixtures for the vault_export tests: a simulator per test on a fake clock, and
InputRuns built the way the adapter builds them (the audit tests' clock and
create-only store are reused)."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

import pytest
from audit.conftest import ClaimMemoryStore, FakeClock

from harness.certs import TestCA
from mailsec.core.checkpoint import MemoryCheckpointStore
from mailsec.core.events import ListSink
from mailsec.core.runtime import InputRun
from vault.simulator import VaultSimulator

MESSAGE = "google:workspace:mailbox:message"
EXPORT = "google:workspace:audit:export"


@pytest.fixture(scope="session")
def ca() -> TestCA:
    return TestCA.create()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(ca, clock):
    with VaultSimulator(ca, clock=clock) as simulator:
        yield simulator


class Harness:
    """One input's durable state across runs: checkpoint store, sink, shared slot store."""

    def __init__(self, sim, clock, slot_store=None, **params) -> None:
        self.sim = sim
        self.clock = clock
        self.checkpoints = MemoryCheckpointStore()
        self.sink = ListSink()
        self.slot_store = slot_store if slot_store is not None else ClaimMemoryStore()
        self.name = params.pop("name", "vault1")
        self.account = sim.account_fields()
        self.params = {
            "account": "google",
            "users": "alice,bob",
            "interval": "900",
            **{key: str(value) for key, value in params.items()},
        }
        self.stop = threading.Event()

    def input_run(self) -> InputRun:
        return InputRun(
            input_type="vault_export",
            name=self.name,
            params=self.params,
            logger=logging.getLogger(f"test.vault.{self.name}"),
            sink=self.sink,
            checkpoints=self.checkpoints,
            load_account=lambda tab, name: dict(self.account),
            open_store=lambda collection: self.slot_store,
            stop=self.stop,
            extras={"clock": self.clock, "sleep": self.clock.sleep},
        )

    def run(self) -> None:
        from mailsec.vault.service import run

        run(self.input_run())

    def state(self) -> dict:
        return self.checkpoints.get(self.name) or {}

    def idle(self) -> bool:
        """No export open or being created, and no window of any user still due."""
        state = self.state()
        if state.get("requests") or state.get("creating"):
            return False
        today = datetime.fromtimestamp(self.clock(), timezone.utc).strftime("%Y-%m-%d")
        users = state.get("users", {}).values()
        return all(not user["redo"] and user["next"] >= today for user in users)

    def run_until_idle(self, limit: int = 12) -> None:
        """Runs, one `interval` apart, until there is nothing left to do."""
        for _ in range(limit):
            self.run()
            if self.idle():
                return
            self.clock.advance(minutes=15)
        raise AssertionError(f"exports still open after {limit} runs: {self.state()}")

    def events(self, sourcetype: str) -> list:
        return [e for e in self.sink.events if e.sourcetype == sourcetype]

    def messages(self) -> list:
        return [e.data for e in self.events(MESSAGE)]

    def lifecycle(self, action=None) -> list:
        found = [e.data for e in self.events(EXPORT)]
        return [e for e in found if action is None or e["action"] == action]


@pytest.fixture
def harness(sim, clock):
    def make(**params):
        return Harness(sim, clock, **params)

    return make
