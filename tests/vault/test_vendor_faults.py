"""vault_export against what the vendor may do that the happy path never shows: a
COMPLETED export listing no zip, Cloud Storage down or refusing, a token revoked or
refused in the middle of a run, an export deleted while half read, a storage server
sending more than asked, an archive announcing a huge table of contents. In process,
against the simulator, on a fake clock (docs/vault_export.md, "Behaviour on errors")."""

from __future__ import annotations

import io
import logging
import struct
import threading
import zipfile
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pytest

from mailsec.core.google_auth import ServiceAccount, TokenProvider
from mailsec.core.http import HttpClient
from mailsec.vault import remote_zip
from mailsec.vault.api import SCOPES, VaultApi
from mailsec.vault.remote_zip import IntegrityError, RemoteZipFile, iter_members
from vault import archive
from vault.conftest import MESSAGE
from vault.simulator import BUCKET

FIRST = "2026-02-27"  # the fake clock starts 2026-03-02 12:00 UTC: 3 whole days are due
DAY = "2026-03-01"  # one whole day due


def message_ids(harness) -> set:
    return {m["message_id"] for m in harness.messages()}


def file_errors(harness) -> list:
    return [e for e in harness.lifecycle("error") if e.get("file_index")]


def runs(harness, count: int) -> None:
    for _ in range(count):
        harness.run()
        harness.clock.advance(minutes=15)


# -- a COMPLETED export that lists no zip --------------------------------------------
def test_completed_without_its_files_is_polled_again_then_read(harness, sim):
    sim.enforce_rate_quota = False
    sim.no_sink["alice"] = 2  # the two first polls after completion list no file
    h = harness(first_begin_date=DAY, users="alice")
    runs(h, 3)
    assert sim.calls["delete"] == 0 and len(sim.exports) == 1  # kept, not forgotten
    assert not h.messages()
    h.run_until_idle()
    assert message_ids(h) == sim.expected_message_ids()
    assert sim.calls["create"] == 1 and not h.lifecycle("error")


def test_completed_never_listing_a_zip_is_an_error_and_the_window_requested_again(harness, sim):
    sim.enforce_rate_quota = False
    sim.no_sink["alice"] = 3
    h = harness(first_begin_date=DAY, users="alice")
    runs(h, 4)  # created, then three polls without a file
    errors = h.lifecycle("error")
    assert len(errors) == 1 and "lists no zip" in errors[0]["error"]
    assert "requested again" in errors[0]["error"]
    # never deleted: its files may still come, and it can be looked at
    assert sim.calls["delete"] == 0 and len(sim.exports) == 2
    h.run_until_idle()
    assert any(name.endswith("retry 1") for name in sim.creates_by_name)
    assert message_ids(h) == sim.expected_message_ids()
    assert len(message_ids(h)) == sim.messages_per_export


def test_completed_with_no_message_and_no_zip_is_an_empty_day(harness, sim):
    sim.enforce_rate_quota = False
    sim.messages_per_export = 0
    sim.no_sink["alice"] = 10**6
    h = harness(first_begin_date=DAY, users="alice")
    h.run_until_idle()
    assert not h.lifecycle("error") and not h.messages()
    assert sim.calls["create"] == 1 and sim.calls["delete"] == 0


# -- Cloud Storage unreachable or refusing -------------------------------------------
@pytest.mark.parametrize("outage", ["5xx", "403"])
def test_a_storage_outage_is_retried_on_every_run_never_given_up(harness, sim, outage):
    sim.enforce_rate_quota = False
    h = harness(first_begin_date=DAY, users="alice")
    h.run()  # created
    h.clock.advance(minutes=15)
    if outage == "5xx":
        sim.bursts_5xx = 10**6
    else:
        sim.storage_status = 403  # e.g. the storage scope not yet delegated
    runs(h, 5)
    errors = file_errors(h)
    assert errors and not any("given up" in e["error"] for e in errors)
    sim.bursts_5xx, sim.storage_status = 0, None
    h.run_until_idle()
    assert message_ids(h) == sim.expected_message_ids()
    assert sim.calls["delete"] == 1


def test_a_token_revoked_early_by_storage_is_renewed_once(harness, sim):
    sim.enforce_rate_quota = False
    sim.revoke_on_stream = 1
    h = harness(first_begin_date=DAY, users="alice")
    h.run_until_idle()
    assert sim.calls["revoked"] == 1
    assert not h.lifecycle("error")
    assert message_ids(h) == sim.expected_message_ids()


def test_a_token_refused_in_the_download_thread_spares_the_other_exports(harness, sim):
    sim.enforce_rate_quota = False
    h = harness(first_begin_date=DAY)
    h.run()  # alice's and bob's exports created
    h.clock.advance(minutes=15)
    sim.revoke_on_stream = 1  # the first download: 401, and the renewal refused
    sim.refuse_renewal = True
    h.run()  # the run goes on to the other export
    errors = file_errors(h)
    assert len(errors) == 1 and "AuthError" in errors[0]["error"]
    assert "invalid_grant" in errors[0]["error"]
    assert len(h.messages()) == sim.messages_per_export  # the other user's
    h.run_until_idle()
    assert message_ids(h) == sim.expected_message_ids()
    assert not any("given up" in e["error"] for e in h.lifecycle("error"))


def test_a_token_refused_while_polling_spares_the_other_exports(harness, sim):
    sim.enforce_rate_quota = False
    h = harness(first_begin_date=DAY)
    h.run()  # alice's and bob's exports created
    h.clock.advance(minutes=15)
    sim.revoke_on_get = 1  # the first poll: 401, and the renewal refused
    sim.refuse_renewal = True
    h.run()  # the run goes on to the other export
    assert len(h.messages()) == sim.messages_per_export
    h.run_until_idle()
    assert message_ids(h) == sim.expected_message_ids()
    assert not h.lifecycle("error")


def test_the_download_thread_renews_the_token_through_its_own_session(sim):
    account = ServiceAccount.from_json(sim.sa_json)
    fields = sim.account_fields()
    used = []

    class Recording(HttpClient):
        def post(self, *args, **kwargs):
            used.append((self, threading.current_thread().name))
            return super().post(*args, **kwargs)

    main = Recording(ca_bundle_pem=fields["ca_bundle"])
    own = Recording(ca_bundle_pem=fields["ca_bundle"])
    tokens = TokenProvider(main, account, sim.admin, sim.token_url, SCOPES, clock=sim.clock)
    api = VaultApi(main, sim.url, sim.url, tokens)
    worker = threading.Thread(target=lambda: api.auth_headers(own), name="vault-download")
    worker.start()
    worker.join()
    assert used == [(own, "vault-download")]
    api.token_refused(api.auth_headers())  # a 401: a new token next time
    api.auth_headers()
    assert used[1:] == [(main, "MainThread")]
    main.close()
    own.close()


# -- an export deleted before it was read to its end ---------------------------------
def test_an_export_deleted_half_read_has_its_window_requested_again(harness, sim, clock):
    sim.enforce_rate_quota = False
    sim.messages_per_export = 450  # three batches of 200
    h = harness(first_begin_date=DAY, users="alice", delete_after_download="false")
    write = h.sink.write

    def write_then_stop(events):
        written = write(events)
        if any(e.sourcetype == MESSAGE for e in events):
            h.stop.set()  # stopped after the first batch of messages
        return written

    h.sink.write = write_then_stop
    h.run()
    clock.advance(minutes=15)
    h.run()
    h.sink.write = write
    h.stop.clear()
    assert len(h.messages()) == 200
    clock.advance(days=15)  # Google deletes the export before the next run
    h.run()
    expired = h.lifecycle("expired")
    assert len(expired) == 1 and expired[0]["messages"] == 200
    h.run_until_idle(limit=20)
    assert "TA_mailsec vault1 alice@example.com 2026-03-01..2026-03-02 retry 1" in (
        sim.creates_by_name
    )
    assert message_ids(h) == sim.expected_message_ids()  # the 15 days after it, too
    start = datetime(2026, 3, 1, tzinfo=timezone.utc)
    day = sim.specs_for("alice@example.com", start, start + timedelta(days=1))
    assert len(day) == 450 and {f"<{spec.message_id}>" for spec in day} <= message_ids(h)


def test_an_export_deleted_after_it_was_read_is_not_requested_again(harness, sim, clock):
    sim.enforce_rate_quota = False
    h = harness(first_begin_date=DAY, users="alice", delete_after_download="false")
    h.run_until_idle()
    request = {
        "id": "exportly-gone",
        "user": "alice@example.com",
        "begin": DAY,
        "end": "2026-03-02",
        "status": "COMPLETED",
        "number_of_files": 1,
        "files": {"z.zip": {"done": True, "members": {"a.mbox": {"written": 9}}}},
    }
    state = h.state()
    state["requests"]["exportly-gone"] = request  # its forgetting was lost (a crash)
    h.checkpoints.save(h.name, state)
    h.run()
    assert h.lifecycle("expired")
    assert sim.calls["create"] == 1


# -- what the storage server and the archive announce --------------------------------
def _remote(sim, data: bytes, name: str = "x/test.zip") -> tuple:
    sim.objects[name] = data
    token = "test-token"
    sim.tokens[token] = (sim.clock() + 3600, frozenset(SCOPES))
    http = HttpClient(ca_bundle_pem=sim.ca.cert_pem.decode(), logger=logging.getLogger("t"))
    url = f"{sim.url}/storage/v1/b/{BUCKET}/o/{quote(name, safe='')}?alt=media"
    remote = RemoteZipFile(http, url, len(data), lambda: {"Authorization": f"Bearer {token}"})
    return http, remote


def test_a_range_answer_longer_than_asked_is_an_integrity_error(sim):
    sim.overlong_ranges = True
    http, remote = _remote(sim, bytes(range(256)) * 4096)
    try:
        with pytest.raises(IntegrityError, match="more than"):
            remote.read_range(1000, 100)
    finally:
        remote.close()
        http.close()


def _stored_zip(members: list) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_central_directory_announced_too_large_is_refused_before_it_is_read(sim, monkeypatch):
    monkeypatch.setattr(remote_zip, "MAX_CENTRAL_DIRECTORY", 64 << 10)
    data = _stored_zip([("a.mbox", b"From x\n\nhello\n"), ("pad.bin", bytes(range(256)) * 4096)])
    end = data.rfind(b"PK\x05\x06")
    fields = list(struct.unpack(zipfile.structEndArchive, data[end : end + 22]))
    fields[5], fields[6] = end, 0  # the directory said to span the whole archive
    data = data[:end] + struct.pack(zipfile.structEndArchive, *fields) + data[end + 22 :]
    http, remote = _remote(sim, data)
    try:
        with pytest.raises(IntegrityError, match="table of contents"):
            list(iter_members(remote))
    finally:
        remote.close()
        http.close()
    # only the end of the archive was asked for
    assert all(r and not r.startswith("bytes=0-") for _, r in sim.range_requests)


def test_a_zip_announcing_a_huge_central_directory_is_counted_others_go_on(harness, sim):
    sim.enforce_rate_quota = False
    sim.huge_directory.add("alice")
    h = harness(first_begin_date=DAY)
    runs(h, 4)
    errors = file_errors(h)
    assert len(errors) == 3 and all(e["user"] == "alice@example.com" for e in errors)
    assert all("table of contents" in e["error"] for e in errors)
    assert "given up" in errors[-1]["error"]
    assert {m["user"] for m in h.messages()} == {"bob@example.com"}


def test_a_zip64_end_record_announcing_a_huge_directory_is_refused(sim):
    data = archive.mbox_zip([("a.mbox", b"From x\n\nhello\n")], form="zip64")
    end64 = data.rfind(zipfile.stringEndArchive64)
    assert end64 >= 0
    size_at = end64 + 40  # after signature, record size, 2 versions, 2 disks, 2 counts
    data = data[:size_at] + (5 << 40).to_bytes(8, "little") + data[size_at + 8 :]
    http, remote = _remote(sim, data)
    try:
        with pytest.raises(IntegrityError, match="table of contents of 5497558138880 bytes"):
            list(iter_members(remote))
    finally:
        remote.close()
        http.close()
