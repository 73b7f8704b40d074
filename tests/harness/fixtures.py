"""pytest plugin: ``splunk_home`` and ``secret_scan`` fixtures.

Register from the top-level conftest with ``pytest_plugins = ["harness.fixtures"]``.

``secret_scan`` yields a ``SecretScan`` watching the test's ``splunk_home`` (logs, .conf
files, ``local/``, file checkpoints). Register each secret the test configures with
``secret_scan.add(value, name=...)``, and other places to check with ``watch_tree``,
``watch_file`` or ``watch(label, run_result)``. Right after the test body passes, everything
watched is scanned and a finding fails the test; the scan runs again at teardown to catch
what other fixtures' teardowns wrote (a finding then is a teardown error).

    def test_no_leak(splunk_home, secret_scan):
        secret_scan.add(API_KEY, name="ser api key")
        result = modinput.run(script, {...}, ...)
        secret_scan.watch("ser_report run", result)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.secret_scan import SecretScan
from harness.splunk_home import make_splunk_home

_SCAN_ATTR = "_harness_secret_scan"


@pytest.fixture
def splunk_home(tmp_path: Path) -> Path:
    """A fresh SPLUNK_HOME per test with ``var/log/splunk`` and the other runtime dirs."""
    return make_splunk_home(tmp_path / "splunk")


def _run_scan(scan: SecretScan) -> None:
    __tracebackhide__ = True
    # What the test scanned itself (scan_text, scan_events, ...) counts too; only the
    # watched sources are scanned afresh, so a rescan at teardown does not repeat them.
    direct = [finding for finding in scan.findings if finding not in scan.watched_findings]
    scan.reset()
    scan.watched_findings = scan.scan_watched()
    scan.findings[:0] = direct
    scan.assert_clean()


@pytest.fixture
def secret_scan(request: pytest.FixtureRequest, splunk_home: Path) -> Iterator[SecretScan]:
    scan = SecretScan()
    scan.watch_tree(splunk_home, prefix="$SPLUNK_HOME/")
    setattr(request.node, _SCAN_ATTR, scan)
    yield scan
    if getattr(request.node, _SCAN_ATTR + "_failed", False):
        return  # already reported as the test's failure
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        return  # the test failed for another reason; do not pile on
    __tracebackhide__ = True
    _run_scan(scan)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    __tracebackhide__ = True
    result = yield  # raises if the test body failed
    scan = getattr(item, _SCAN_ATTR, None)
    if scan is not None and not getattr(item, _SCAN_ATTR + "_checked", False):
        setattr(item, _SCAN_ATTR + "_checked", True)
        try:
            _run_scan(scan)
        except AssertionError:
            setattr(item, _SCAN_ATTR + "_failed", True)
            raise
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[object]:
    report = yield
    if call.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
