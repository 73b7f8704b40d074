"""Shared fixtures: the built add-on, and the harness's fixtures (splunk_home, secret_scan)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness.splunk_home import install_app

pytest_plugins = ["harness.fixtures"]

ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = ROOT / "output" / "TA_mailsec"


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
