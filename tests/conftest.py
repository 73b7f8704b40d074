"""Shared fixtures: the built add-on, and the harness's fixtures (splunk_home, secret_scan).

A test that installs the built add-on in a SPLUNK_HOME (``installed_app``) runs its scripts
through the harness runners: it is marked ``slow`` here, and ``make test`` runs the ``slow``
set once per Python Splunk ships, the runners' interpreter set by ``MAILSEC_SCRIPT_PYTHON``
(docs/development.md).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness import modinput
from harness.splunk_home import install_app

pytest_plugins = ["harness.fixtures"]

ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = ROOT / "output" / "TA_mailsec"


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "installed_app" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def pytest_report_header() -> str:
    python = modinput.default_python()
    version = subprocess.run(
        [python, "-S", "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"add-on scripts run with: {python} (Python {version or '?'})"


def _newest_source_mtime() -> float:
    sources = [ROOT / "globalConfig.json", *(ROOT / "package").rglob("*")]
    return max(path.stat().st_mtime for path in sources if path.is_file())


@pytest.fixture(scope="session")
def built_app() -> Path:
    """output/TA_mailsec as `make build` makes it, rebuilt when a source is newer."""
    marker = BUILD_DIR / "VERSION"
    if not marker.exists() or marker.stat().st_mtime < _newest_source_mtime():
        subprocess.run(["make", "build"], cwd=ROOT, check=True, env={**os.environ})
    return BUILD_DIR


@pytest.fixture
def installed_app(built_app, splunk_home) -> Path:
    """The built add-on installed in this test's $SPLUNK_HOME/etc/apps/TA_mailsec,
    where splunkd runs its scripts from (lib/ linked, not copied, for speed)."""
    return install_app(built_app, splunk_home, link_lib=True)


@pytest.fixture
def splunkd():
    """A splunkd stand-in on loopback: storage/passwords, configs, KV store."""
    from harness.splunkd import SplunkdStandIn

    with SplunkdStandIn() as standin:
        yield standin
