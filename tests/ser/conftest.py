"""Service-level fixtures: the simulator on loopback TLS and an InputRun built directly."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Optional

import pytest

from harness.certs import TestCA
from mailsec.core.checkpoint import MemoryCheckpointStore
from mailsec.core.events import Event, ListSink
from mailsec.core.runtime import InputRun
from mailsec.ser import service
from ser.simulator import SerSimulator, SimClock

# 2024-06-10T12:00:00Z
T0 = 1718020800.0
INPUT = "ser_main"
ACCOUNT = "acme"


@pytest.fixture(scope="session")
def ca() -> TestCA:
    return TestCA.create()


@pytest.fixture
def clock() -> SimClock:
    return SimClock(T0)


@pytest.fixture
def sim(ca, clock):
    with SerSimulator(ca, clock=clock) as simulator:
        yield simulator


class Killed(BaseException):
    """Stands for the process being killed: nothing in the input catches it."""


class CrashingSink(ListSink):
    """Writes `crash_after` batches, then fails like a killed process would."""

    def __init__(self, crash_after: int) -> None:
        super().__init__()
        self.crash_after = crash_after

    def write(self, events: Iterable[Event]) -> int:
        if self.crash_after <= 0:
            raise Killed("killed")
        self.crash_after -= 1
        return super().write(events)


class Harness:
    """Runs cycles of the input against the simulator, keeping the checkpoint store."""

    def __init__(self, sim: SerSimulator, clock: SimClock) -> None:
        self.sim = sim
        self.clock = clock
        self.checkpoints = MemoryCheckpointStore()
        self.sink = ListSink()
        self.logger = logging.getLogger("test.ser_report")
        self.account = sim.account_fields()
        self.last_run: Optional[InputRun] = None

    def make_run(self, params: dict, sink=None) -> InputRun:
        values = {"account": ACCOUNT, "start_date": None}
        values.update(params)
        return InputRun(
            input_type="ser_report",
            name=INPUT,
            params=values,
            logger=self.logger,
            sink=sink or self.sink,
            checkpoints=self.checkpoints,
            load_account=lambda tab, name: dict(self.account),
            open_store=lambda collection: MemoryCheckpointStore(),
            index="main",
            extras={"clock": self.clock.now, "sleep": self.clock.sleep},
        )

    def cycle(self, sink=None, **params) -> dict:
        run = self.make_run({k: str(v) for k, v in params.items()}, sink)
        self.last_run = run
        service.run(run)
        return run.extras["stats"]

    @property
    def state(self) -> dict:
        return self.checkpoints.get(INPUT)

    def summaries(self, events=None) -> list[dict]:
        return [
            e.data
            for e in (self.sink.events if events is None else events)
            if e.sourcetype == "proofpoint:ser:summary"
        ]

    def entitlements(self) -> list[dict]:
        return [e.data for e in self.sink.events if e.sourcetype == "proofpoint:ser:entitlement"]


@pytest.fixture
def harness(sim, clock) -> Harness:
    return Harness(sim, clock)
