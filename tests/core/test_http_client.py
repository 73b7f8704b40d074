"""The HTTP core: retries, Retry-After, verification always on, proxy, truncation."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
import requests

from core.conftest import Answer
from harness.proxy import ConnectProxy
from mailsec.core.http import (
    NO_REPEAT_AFTER_SEND,
    HttpClient,
    IncompleteBody,
    ProxyConfig,
    RetryPolicy,
    iter_body,
    parse_retry_after,
)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client(ca, **kwargs) -> HttpClient:
    kwargs.setdefault("sleep", Sleeps())
    kwargs.setdefault("rng", lambda: 1.0)  # top of the jitter range: deterministic
    return HttpClient(ca_bundle_pem=ca.cert_pem.decode(), **kwargs)


def test_retries_5xx_with_exponential_backoff_then_succeeds(scripted_server, test_ca):
    scripted_server.script[:] = [Answer(503), Answer(502), Answer(500), Answer(200, b"done")]
    http = client(test_ca, retry=RetryPolicy(max_attempts=5, backoff_base=2.0))
    response = http.get(scripted_server.url + "/x")
    assert response.status_code == 200 and response.content == b"done"
    assert len(scripted_server.requests) == 4
    assert http._sleep == [2.0, 4.0, 8.0]
    assert http.stats["status_5xx"] == 3


def test_jitter_stays_within_half_to_full_backoff(test_ca):
    low = HttpClient(rng=lambda: 0.0, retry=RetryPolicy(backoff_base=4.0))
    high = HttpClient(rng=lambda: 1.0, retry=RetryPolicy(backoff_base=4.0, backoff_max=10.0))
    assert low.backoff(1) == 2.0
    assert high.backoff(1) == 4.0
    assert high.backoff(5) == 10.0  # capped


def test_gives_back_the_last_answer_when_5xx_outlast_the_policy(scripted_server, test_ca):
    scripted_server.script[:] = [Answer(503)] * 3
    http = client(test_ca, retry=RetryPolicy(max_attempts=3))
    assert http.get(scripted_server.url).status_code == 503
    assert len(scripted_server.requests) == 3


def test_retry_after_seconds_is_honoured_on_429(scripted_server, test_ca):
    scripted_server.script[:] = [Answer(429, headers={"Retry-After": "7"}), Answer(200)]
    http = client(test_ca)
    assert http.get(scripted_server.url).status_code == 200
    assert http._sleep == [7.0]
    assert http.stats["status_429"] == 1


def test_retry_after_http_date_is_honoured(scripted_server, test_ca):
    scripted_server.script[:] = [
        Answer(429, headers={"Retry-After": "Wed, 21 Oct 2026 07:28:30 GMT"}),
        Answer(200),
    ]
    now = 1792567700.0  # 2026-10-21T07:28:20Z: ten seconds before the date
    http = client(test_ca, wall_clock=lambda: now)
    assert http.get(scripted_server.url).status_code == 200
    assert http._sleep == [pytest.approx(10.0)]


def test_429_without_retry_after_backs_off(scripted_server, test_ca):
    scripted_server.script[:] = [Answer(429), Answer(429), Answer(200)]
    http = client(test_ca, retry=RetryPolicy(backoff_base=3.0))
    assert http.get(scripted_server.url).status_code == 200
    assert http._sleep == [3.0, 6.0]


def test_parse_retry_after_rejects_garbage():
    assert parse_retry_after(None, 0) is None
    assert parse_retry_after("soon", 0) is None
    assert parse_retry_after("120", 0) == 120.0


def test_connection_reset_is_retried(scripted_server, test_ca):
    scripted_server.script[:] = [Answer(reset=True), Answer(200, b"after reset")]
    http = client(test_ca)
    assert http.get(scripted_server.url).content == b"after reset"
    assert http.stats["connection_errors"] == 1
    assert len(http._sleep) == 1


def test_refused_connection_is_retried_even_for_requests_that_must_not_repeat(test_ca):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    http = client(test_ca, retry=NO_REPEAT_AFTER_SEND)
    with pytest.raises(requests.exceptions.ConnectionError):
        http.post(f"https://127.0.0.1:{port}/send", json={})
    assert http.stats["requests"] == NO_REPEAT_AFTER_SEND.max_attempts


def test_read_timeout_is_not_retried_when_the_request_must_not_repeat(scripted_server, test_ca):
    scripted_server.script[:] = [Answer(200, delay=1.5), Answer(200)]
    http = client(test_ca, retry=NO_REPEAT_AFTER_SEND, read_timeout=0.3)
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.post(scripted_server.url + "/send", json={"a": 1})
    assert len(scripted_server.requests) == 1


def test_never_sends_without_verification(scripted_server, test_ca, monkeypatch, tmp_path):
    # requests lets REQUESTS_CA_BUNDLE override a session's trust store; the client
    # must not: without the account's CA bundle the test server is untrusted.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(test_ca.write(tmp_path)))
    http = HttpClient(sleep=Sleeps(), retry=RetryPolicy(max_attempts=1))
    with pytest.raises(requests.exceptions.SSLError):
        http.get(scripted_server.url)
    assert scripted_server.requests == []
    with pytest.raises(ValueError, match="cannot be turned off"):
        http.get(scripted_server.url, verify=False)


def test_account_ca_bundle_wins_over_environment(scripted_server, test_ca, monkeypatch, tmp_path):
    from harness.certs import TestCA

    other = TestCA.create("Unrelated CA")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other.write(tmp_path)))
    http = client(test_ca)
    assert http.get(scripted_server.url).status_code == 200


def test_ca_bundle_must_be_pem():
    with pytest.raises(ValueError, match="not PEM"):
        HttpClient(ca_bundle_pem="not a certificate")


def test_ca_bundle_file_is_content_addressed_and_reused(test_ca, tmp_path):
    """A killed run leaves no per-run file behind: the same bundle maps to one file."""
    import os
    import stat

    from mailsec.core.http import ca_bundle_file

    pem = test_ca.cert_pem.decode()
    first = ca_bundle_file(pem, str(tmp_path))
    assert ca_bundle_file(pem, str(tmp_path)) == first
    assert Path(first).read_text() == pem
    assert stat.S_IMODE(os.stat(first).st_mode) == 0o600
    other = ca_bundle_file(pem + "\n", str(tmp_path))
    assert other != first
    assert sorted(os.listdir(tmp_path)) == sorted(
        [os.path.basename(first), os.path.basename(other)]
    )


def test_ca_bundle_file_written_by_threads_at_once(test_ca, tmp_path):
    """Two inputs in one process may write the same new bundle at the same moment."""
    import os
    import threading

    from mailsec.core.http import ca_bundle_file

    pem = test_ca.cert_pem.decode()
    failures = []
    for round_ in range(40):
        folder = tmp_path / str(round_)
        start = threading.Barrier(4)

        def write(folder=folder, start=start):
            start.wait(timeout=10)
            try:
                assert Path(ca_bundle_file(pem, str(folder))).read_text() == pem
            except Exception as error:  # pragma: no cover - reported below
                failures.append(error)

        threads = [threading.Thread(target=write) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(os.listdir(folder)) == 1  # no partial file left
    assert failures == []


def test_uses_the_configured_proxy_with_credentials(scripted_server, test_ca):
    with ConnectProxy(required_credentials="proxyuser:p@ss word") as proxy:
        http = client(
            test_ca,
            proxy=ProxyConfig("127.0.0.1", proxy.port, "proxyuser", "p@ss word"),
        )
        assert http.get(scripted_server.url + "/via-proxy").status_code == 200
    assert proxy.seen == [("CONNECT", f"127.0.0.1:{scripted_server.port}", "proxyuser:p@ss word")]
    assert scripted_server.requests[0][1] == "/via-proxy"


def test_proxy_password_is_not_in_repr():
    assert "secret-pw" not in repr(ProxyConfig("proxy", 3128, "u", "secret-pw"))


def test_cut_off_body_is_detected(scripted_server, test_ca):
    scripted_server.script[:] = [Answer(200, b"x" * 100_000, short_by=40_000)]
    http = client(test_ca)
    response = http.get(scripted_server.url, stream=True)
    with pytest.raises(IncompleteBody) as caught:
        b"".join(iter_body(response, chunk_size=8192))
    assert caught.value.expected == 100_000
    assert caught.value.received == 60_000


def test_whole_body_passes_the_length_check(scripted_server, test_ca):
    scripted_server.script[:] = [Answer(200, b"y" * 70_000)]
    response = client(test_ca).get(scripted_server.url, stream=True)
    assert len(b"".join(iter_body(response))) == 70_000


def test_retry_log_lines_carry_no_query_string(scripted_server, test_ca, caplog):
    scripted_server.script[:] = [Answer(503), Answer(200)]
    http = client(test_ca, logger=logging.getLogger("test.http"))
    with caplog.at_level(logging.WARNING, logger="test.http"):
        http.get(scripted_server.url + "/report?token=abc123secret")
    assert "503" in caplog.text
    assert "abc123secret" not in caplog.text


def test_a_planted_ca_bundle_folder_or_file_is_not_trusted(test_ca, tmp_path):
    """Another local user could create the shared folder first, or put a file of
    their own CA under the expected name: neither may replace the trust store."""
    import os

    from mailsec.core.files import private_dir
    from mailsec.core.http import ca_bundle_file

    pem = test_ca.cert_pem.decode()
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(PermissionError, match="link"):
        ca_bundle_file(pem, str(link))
    folder = tmp_path / "bundles"
    path = ca_bundle_file(pem, str(folder))
    Path(path).write_text("-----BEGIN CERTIFICATE-----\nplanted\n-----END CERTIFICATE-----\n")
    assert ca_bundle_file(pem, str(folder)) == path
    assert Path(path).read_text() == pem  # rewritten: only the bundle's own content is used
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    os.chmod(loose, 0o777)  # noqa: S103 (the folder being tested)
    private_dir(str(loose))
    assert oct(os.stat(loose).st_mode & 0o777) == "0o700"
