"""Service-level fixtures for ser_usage: the reporting API simulator on loopback TLS,
with a settable clock, and cycles of the input run on an InputRun built directly."""

from __future__ import annotations

import pytest
from ser.conftest import Harness, ca  # noqa: F401  (the session CA fixture)
from ser.simulator import SimClock

from mailsec.core.secrets import MemorySecretCache
from mailsec.ser import usage_service
from ser_usage.simulator import SerUsageSimulator

# 2024-06-10T12:00:00Z
T0 = 1718020800.0
DAY = 86400
SOURCETYPES = {
    "relay_usage": "proofpoint:ser:relay_usage",
    "relay_failures": "proofpoint:ser:relay_failures",
    "delivery_failures": "proofpoint:ser:delivery_failure",
    "overview": "proofpoint:ser:overview",
}


@pytest.fixture
def clock() -> SimClock:
    return SimClock(T0)


@pytest.fixture
def sim(ca, clock):  # noqa: F811
    # far above the tests' 10,000 a minute: a test of the limit lowers it
    with SerUsageSimulator(ca, clock=clock, limit_per_minute=20000) as simulator:
        yield simulator


class UsageHarness(Harness):
    def __init__(self, sim, clock) -> None:
        super().__init__(sim, clock)
        self.tokens = MemorySecretCache()  # kept across runs, as storage/passwords is

    def cycle(self, sink=None, **params) -> dict:
        run = self.make_run({k: str(v) for k, v in params.items()}, sink)
        run.input_type = "ser_usage"
        run.secret_cache = self.tokens
        self.last_run = run
        usage_service.run(run)
        return run.extras["stats"]

    def of(self, report: str, events=None) -> list[dict]:
        events = self.sink.events if events is None else events
        return [e.data for e in events if e.sourcetype == SOURCETYPES[report]]


@pytest.fixture
def harness(sim, clock) -> UsageHarness:
    return UsageHarness(sim, clock)
