"""Fixtures of the Release Manager tests: a CA, the simulator with a registry in
which the add-on's certificate may send, and an in-process run of the action."""

from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

from harness.certs import TestCA
from mailsec.adapters.alert import SplunkHomeOutput
from mailsec.core.secrets import MemorySecretCache
from mailsec.rm import action
from rm.simulator import RmSimulator, standard_setup

P12_PASSWORD = "p12-Pa55word!"
SENDER = "splunk-alerts@corp.example"


@pytest.fixture(scope="session")
def ca() -> TestCA:
    return TestCA.create("RM test CA")


@pytest.fixture(scope="session")
def client_setup(ca):
    return standard_setup(ca, SENDER)


@pytest.fixture
def sim(ca, client_setup):
    registry, _client = client_setup
    # a fresh registry per test: tests change it
    from copy import deepcopy

    with RmSimulator(ca, registry=deepcopy(registry)) as simulator:
        yield simulator


@pytest.fixture
def client_cert(client_setup):
    return client_setup[1]


@pytest.fixture(autouse=True)
def private_tmpdir(tmp_path, monkeypatch) -> Path:
    """Temporary files of the code under test go to a folder the test inspects."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def leftover_cert_dirs(folder: Path) -> list:
    """Everything the code under test left in its temporary folder, whatever its name
    (the shared, content-addressed CA bundles aside: public certificates, reused)."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if not p.relative_to(folder).parts[0].startswith("ta_mailsec_ca_bundles")
    )


def account_fields(sim: RmSimulator, client_cert, ca: TestCA, **overrides) -> dict:
    fields = {
        "hostname": sim.hostname,
        "whitelist_name": "SplunkAlerts",
        "client_certificate": base64.b64encode(
            client_cert.to_pkcs12(P12_PASSWORD.encode())
        ).decode(),
        "certificate_password": P12_PASSWORD,
        "ca_bundle": ca.cert_pem.decode(),
    }
    fields.update(overrides)
    return fields


@dataclass
class Run:
    status: int
    events: list
    log: str
    sleeps: list
    account_reads: int
    stash_headers: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    @property
    def event(self) -> dict:
        assert len(self.events) == 1, self.events
        return self.events[0]


def read_stash(splunk_home: Path) -> tuple[list, list]:
    headers, events = [], []
    spool = splunk_home / "var" / "spool" / "splunk"
    for path in sorted(spool.glob("*.stash_new")) if spool.exists() else []:
        header, *lines = path.read_text(encoding="utf-8").splitlines()
        headers.append(header)
        events.extend(json.loads(line) for line in lines if line)
        path.unlink()  # as splunkd does once indexed
    return headers, events


class MemorySecrets(MemorySecretCache):
    """The certificate cache in memory, counting writes, able to refuse them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.fail_writes = False

    def set(self, name, value):
        if self.fail_writes:
            raise PermissionError("splunkd answered 403 to POST storage/passwords")
        self.writes += 1
        super().set(name, value)


@pytest.fixture
def run_action(tmp_path, sim, client_cert, ca):
    """Run the action in-process as the script would, with a fake sleep."""
    home = tmp_path / "splunk_home"

    def run(
        configuration: Optional[dict] = None,
        *,
        account: Optional[dict] = None,
        results_file: Optional[str] = None,
        on_sleep=None,
        read_timeout: float = 5.0,
        settings: Optional[dict] = None,
        store=None,
        now=None,
        **payload_extra: Any,
    ) -> Run:
        config = {
            "account": "rm1",
            "to": "ops@corp.example",
            "subject": "Splunk alert: disk full",
            "text": "The disk is full.",
            "html": "<p>The disk is full.</p>",
            "important": "1",
            "include_results": "none",
            "max_rows": "50",
            "result_index": "mail_audit",
        }
        config.update(configuration or {})
        fields = account if account is not None else account_fields(sim, client_cert, ca)
        reads = []
        sleeps = []

        def load_account(tab, name):
            reads.append((tab, name))
            if name != "rm1":
                from mailsec.core.params import ConfigError

                raise ConfigError("account", f"no {tab} named {name!r}")
            return dict(fields)

        def sleep(seconds):
            sleeps.append(seconds)
            if on_sleep:
                on_sleep(len(sleeps))

        payload = {
            "search_name": "Disk full",
            "sid": "scheduler__admin__search__RMD5_at_1700000000_1",
            "server_uri": "https://127.0.0.1:1",
            "session_key": "unused-in-process",
            "results_file": results_file,
            "configuration": config,
        }
        payload.update(payload_extra)
        runtime = action.Runtime(
            output=SplunkHomeOutput(str(home)),
            load_account=load_account,
            load_settings=lambda: settings or {},
            sleep=sleep,
            rng=lambda: 0.0,
            read_timeout=read_timeout,
            connect_timeout=2.0,
            cert_cache=store,
        )
        if now is not None:
            runtime.now = now
        status = action.run(payload, runtime)
        headers, events = read_stash(home)
        log_file = home / "var" / "log" / "splunk" / "rm_send_mail_modalert.log"
        log = log_file.read_text(encoding="utf-8") if log_file.exists() else ""
        log_file.unlink(missing_ok=True)
        return Run(status, events, log, sleeps, len(reads), headers, runtime.timings)

    return run
