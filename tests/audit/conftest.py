"""Fixtures for the audit_export tests: one CA and one PGP key pair per session,
a simulator per test on a fake clock, and InputRuns built the way the adapter builds them."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import threading
import zlib
from datetime import datetime, timezone

import pytest

from audit.simulator import AuditSimulator, gpg_keypair
from harness.certs import TestCA
from mailsec.core.checkpoint import MemoryCheckpointStore
from mailsec.core.events import ListSink
from mailsec.core.runtime import InputRun

START = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc).timestamp()
PASSPHRASE = "correct horse battery staple"


class FakeClock:
    """Wall clock for the service and the simulator; `sleep` moves it on."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self.sleeps: list = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds
        return False  # like Event.wait: "not stopped"

    def advance(self, **kwargs) -> None:
        from datetime import timedelta

        self.now += timedelta(**kwargs).total_seconds()


class ClaimMemoryStore(MemoryCheckpointStore):
    """A shared in-memory KV collection with the KV store's create-only insert (409)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.inserts = 0

    def insert(self, key: str, state) -> bool:
        with self._lock:
            self.inserts += 1
            if key in self.data:
                return False
            self.save(key, state)
            return True


@pytest.fixture(scope="session")
def ca() -> TestCA:
    return TestCA.create()


@pytest.fixture(scope="session")
def pgp_keys():
    """(public, private) armored RSA 2048 pair protected by PASSPHRASE, made once."""
    with tempfile.TemporaryDirectory(prefix="audit_keys_") as home:
        return gpg_keypair(home, "Splunk Audit <audit@example.com>", PASSPHRASE)


@pytest.fixture(scope="session")
def other_pgp_keys():
    """A second pair (passphrase "x"): a key change, or a key that cannot decrypt."""
    with tempfile.TemporaryDirectory(prefix="audit_keys_") as home:
        return gpg_keypair(home, "Other <other@example.com>", "x")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(ca, clock):
    with AuditSimulator(ca, clock=clock) as simulator:
        yield simulator


@pytest.fixture
def workdir():
    """Short, like a real temp folder: gpg-agent's socket path must fit in 107 bytes."""
    path = tempfile.mkdtemp(prefix="aw_", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Harness:
    """One input's durable state across runs: checkpoint store, sink, shared budget store."""

    def __init__(self, sim, pgp_keys, clock, workdir, budget_store=None, **params) -> None:
        self.sim = sim
        self.clock = clock
        self.workdir = workdir
        self.checkpoints = MemoryCheckpointStore()
        self.sink = ListSink()
        self.budget_store = budget_store if budget_store is not None else ClaimMemoryStore()
        self.name = params.pop("name", "audit1")
        self.account = sim.account_fields(pgp_keys[0], pgp_keys[1], PASSPHRASE)
        self.params = {
            "account": "google",
            "users": "alice,bob",
            "export_every": "1d",
            "interval": "900",
            **{key: str(value) for key, value in params.items()},
        }
        self.stop = threading.Event()

    def input_run(self) -> InputRun:
        return InputRun(
            input_type="audit_export",
            name=self.name,
            params=self.params,
            logger=logging.getLogger(f"test.audit.{self.name}"),
            sink=self.sink,
            checkpoints=self.checkpoints,
            load_account=lambda tab, name: dict(self.account),
            open_store=lambda collection: self.budget_store,
            stop=self.stop,
            extras={"clock": self.clock, "sleep": self.clock.sleep, "workdir_base": self.workdir},
        )

    def run(self) -> None:
        from mailsec.audit.service import run

        run(self.input_run())

    def run_until_idle(self, limit: int = 10) -> None:
        """Runs, one `interval` apart, until no export request is open."""
        for _ in range(limit):
            self.run()
            state = self.checkpoints.get(self.name) or {}
            if not state.get("requests"):
                return
            self.clock.advance(minutes=15)
        raise AssertionError(f"requests still open after {limit} runs: {state.get('requests')}")

    def events(self, sourcetype: str) -> list:
        return [e for e in self.sink.events if e.sourcetype == sourcetype]

    def messages(self) -> list:
        return [e.data for e in self.events("google:workspace:mailbox:message")]

    def lifecycle(self, action=None) -> list:
        found = [e.data for e in self.events("google:workspace:audit:export")]
        return [e for e in found if action is None or e["action"] == action]

    def leftovers(self) -> list:
        found = []
        for base, dirs, files in os.walk(self.workdir):
            found += [os.path.join(base, name) for name in files + dirs]
        return found


@pytest.fixture
def harness(sim, pgp_keys, clock, workdir):
    def make(**params):
        return Harness(sim, pgp_keys, clock, workdir, **params)

    return make


@pytest.fixture
def hanging_gpg_dir(tmp_path):
    """A `gpg` that behaves as the real one, except that a decryption hangs: it
    prints nothing and never exits (as gpg waiting on a lost agent or a stuck disk)."""
    folder = tmp_path / "hanging_bin"
    folder.mkdir()
    script = folder / "gpg"
    script.write_text(
        "#!/bin/sh\n"
        f'for arg in "$@"; do [ "$arg" = "--decrypt" ] && exec sleep {_sleep_time(folder)}; done\n'
        f'exec {shutil.which("gpg")} "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder


def _sleep_time(folder) -> str:
    # an hour, with a fraction that names the fixture: the end-to-end runs of the
    # Python matrix go side by side, each with its own hung gpg
    return f"3600.{zlib.crc32(str(folder).encode())}"


def sleepers(folder) -> set:
    """PIDs of the `sleep` processes that the hung gpg of `hanging_gpg_dir` became."""
    wanted = b"sleep\x00" + _sleep_time(folder).encode() + b"\x00"
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if cmdline.read() == wanted:
                    found.add(int(pid))
        except OSError:
            continue
    return found
