"""The audit_export service against the simulator: real TLS, real JWT, real gpg."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections import Counter
from datetime import datetime, timezone

import pytest

from audit.conftest import Harness
from mailsec.audit import api as api_module
from mailsec.audit.auth import AuthError
from mailsec.core.timeutil import parse_google


def by_message_id(harness: Harness) -> dict:
    return {m["message_id"]: m for m in harness.messages()}


def expected_messages(sim) -> dict:
    """message_id -> (request_id, spec) for every export the simulator completed."""
    found = {}
    for request_id, specs in sim.expected_specs().items():
        for spec in specs:
            found[f"<{spec.message_id}>"] = (request_id, spec)
    return found


def assert_exactly_once(harness: Harness, sim) -> None:
    """Every message of the corpus is there, and each distinct event_id is one message."""
    expected = expected_messages(sim)
    ids = {}
    for message in harness.messages():
        ids.setdefault(message["event_id"], message["message_id"])
        assert ids[message["event_id"]] == message["message_id"]
    assert sorted(ids.values()) == sorted(expected)


def test_full_lifecycle_for_two_users(harness, sim, clock):
    h = harness(users="alice,bob@example.com", delete_after_download="true")
    h.run_until_idle()

    expected = expected_messages(sim)
    assert len(expected) == 2 * sim.messages_per_export
    messages = h.messages()
    assert len(messages) == len(expected)  # exactly one event per message
    assert len({m["event_id"] for m in messages}) == len(messages)
    for message in messages:
        request_id, spec = expected[message["message_id"]]
        assert message["request_id"] == request_id
        assert message["user"] in ("alice@example.com", "bob@example.com")
        assert message["domain"] == "example.com"
        for name, value in spec.expected_fields().items():
            assert message[name] == value, name
        assert "body" not in message  # include_body defaults to false
        if spec.date is None:
            # no Date header: the export time (the request's completedDate)
            completed = sim.exports[request_id].completed.replace(second=0, microsecond=0)
            assert message["time"] == completed.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        else:
            assert message["time"] == spec.date.astimezone(timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S.000000Z"
            )

    actions = Counter(e["action"] for e in h.lifecycle())
    assert actions == {"created": 2, "status": 2, "downloaded": 4, "decrypted": 4, "deleted": 2}
    for event in h.lifecycle("decrypted"):
        assert event["messages"] > 0 and event["bytes"] > 0
    assert sim.calls["publickey"] == 1 and sim.calls["create"] == 2
    # DELETE answered MARKED_DELETE twice, then DELETED: backoff 2 s, 4 s per request
    assert clock.sleeps.count(2.0) == 2 and clock.sleeps.count(4.0) == 2
    assert sim.files == {}  # the files are gone at Google too
    assert h.leftovers() == []  # and nothing is left on this side


def test_windows_follow_each_other_with_no_gap(harness, sim, clock):
    begin = datetime.fromtimestamp(clock(), timezone.utc).replace(hour=0)
    h = harness(
        users="alice", export_every="12h", first_begin_date=begin.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    h.run_until_idle()
    clock.advance(hours=12)
    h.run_until_idle()
    windows = sorted((e.begin, e.end) for e in sim.exports.values())
    assert len(windows) == 2  # 00:00-12:00, then 12:00-24:00 once it is over
    for (_, end), (next_begin, _) in zip(windows, windows[1:]):
        assert end == next_begin
    assert parse_google(windows[0][0]) == begin


def test_include_body_and_header_only(harness, sim):
    h = harness(
        users="alice", include_body="true", body_max_bytes="40", package_content="HEADER_ONLY"
    )
    h.run_until_idle()
    export = next(iter(sim.exports.values()))
    assert export.package_content == "HEADER_ONLY"
    for message in h.messages():
        spec = expected_messages(sim)[message["message_id"]][1]
        assert message["body"] == spec.body.encode()[:40].decode("utf-8", "replace")


@pytest.mark.parametrize("fault", ["corrupt", "truncated_pgp", "truncated_mbox"])
def test_bad_file_gives_an_error_event_and_the_other_files_go_through(harness, sim, fault):
    sim.file_faults["alice"] = {0: fault}
    h = harness(users="alice,bob")
    h.run()
    h.clock.advance(minutes=15)
    h.run()  # completes and processes

    errors = h.lifecycle("error")
    assert errors, "no error event"
    assert all(e["file_index"] == 0 and e["user"] == "alice@example.com" for e in errors)
    expected = expected_messages(sim)
    alice_file1 = {f"<{s.message_id}>" for s in sim.exports["53156"].specs[1::2]}
    got = {m["message_id"] for m in h.messages()}
    bob = {mid for mid, (rid, _) in expected.items() if sim.exports[rid].user == "bob"}
    assert bob <= got and alice_file1 <= got  # the other files went through
    decrypted = {(e["user"], e["file_index"]) for e in h.lifecycle("decrypted")}
    assert ("alice@example.com", 1) in decrypted
    if fault == "truncated_mbox":
        # the file decrypted; its last message is indexed, flagged, and reported
        assert "inside message" in errors[0]["error"]
        assert any(m.get("truncated") for m in h.messages())
        assert ("alice@example.com", 0) in decrypted
    else:
        assert "decrypt" in errors[0]["error"]
        assert ("alice@example.com", 0) not in decrypted
        # retried on the next runs, then given up and kept (not deleted) for inspection
        for _ in range(3):
            h.clock.advance(minutes=15)
            h.run()
        state = h.checkpoints.get("audit1")
        assert state["requests"]["53156"]["files"]["0"]["failed"] is True
        assert sim.exports["53156"].deletes == 0
        assert len(h.lifecycle("error")) == 3
    assert h.leftovers() == []


def test_cut_download_is_an_error_and_retried(harness, sim):
    h = harness(users="alice")
    h.run()
    h.clock.advance(minutes=15)
    original = sim._complete

    def complete_then_cut(export):
        original(export)
        sim.download_cut.add(export.files[0])

    sim._complete = complete_then_cut
    h.run()
    errors = h.lifecycle("error")
    assert len(errors) == 1 and "cut off" in errors[0]["error"]
    h.run_until_idle()
    assert_exactly_once(h, sim)


def test_marked_delete_is_retried_with_backoff_until_deleted(harness, sim, clock):
    sim.marked_delete_times = 4
    h = harness(users="alice")
    h.run_until_idle()
    assert sim.exports["53156"].deletes == 5
    assert clock.sleeps == [2.0, 4.0, 8.0, 16.0]
    assert [e["status"] for e in h.lifecycle("deleted")] == ["DELETED"]


def test_marked_delete_beyond_one_run_carries_over(harness, sim, clock):
    sim.marked_delete_times = 8  # 2+4+...+128 s is more than one run waits
    h = harness(users="alice")
    h.run_until_idle(limit=20)
    assert sim.exports["53156"].status == "DELETED"
    assert len(h.lifecycle("deleted")) == 1


def test_error_status_gives_an_error_event_and_the_window_is_requested_again(harness, sim):
    sim.error_users.add("alice")
    h = harness(users="alice")
    h.run()
    h.clock.advance(minutes=15)
    h.run()
    assert [e["status"] for e in h.lifecycle("error")] == ["ERROR"]
    sim.error_users.clear()
    h.run_until_idle()
    windows = [(e.begin, e.end) for e in sim.exports.values()]
    assert len(windows) == 2 and windows[0] == windows[1]  # the same window, again
    assert_exactly_once(h, sim)


def test_expiry_warning_at_18_days_and_expired_at_21(harness, sim, clock, other_pgp_keys):
    h = harness(users="alice")
    h.run()
    # a private key that cannot decrypt: the completed export stays unprocessed
    h.account["pgp_private_key"] = other_pgp_keys[1]
    h.account["pgp_passphrase"] = "x"
    clock.advance(minutes=15)
    h.run()
    assert h.lifecycle("warning") == []
    clock.advance(days=18)
    h.run()
    warnings = h.lifecycle("warning")
    assert len(warnings) == 1 and "expires" in warnings[0]
    clock.advance(days=3)
    h.run()
    assert len(h.lifecycle("warning")) == 1
    expired = h.lifecycle("expired")
    assert len(expired) == 1 and expired[0]["request_id"] == "53156"


def test_quota_refusal_from_google_is_budget_exhausted(harness, sim, clock):
    day = datetime.fromtimestamp(clock(), timezone.utc).strftime("%Y-%m-%d")
    sim.created_per_day[day] = 100  # other admins used the domain's 100 today
    h = harness(users="alice,bob")
    h.run()
    events = h.lifecycle("budget_exhausted")
    assert len(events) == 1 and "limit" in events[0]["error"]
    assert sim.calls["quota_refused"] == 1  # bob was not even tried
    h.run()
    assert sim.calls["quota_refused"] == 1 and len(h.lifecycle("budget_exhausted")) == 1


def test_two_inputs_on_one_domain_never_exceed_the_budget(sim, pgp_keys, clock, workdir, splunkd):
    """Two inputs, run concurrently over and over, share a budget of 30 a day in
    the KV store: each through its own KVStoreCheckpointStore on the splunkd
    stand-in, which refuses (409) to insert a key that exists, as splunkd does."""
    from mailsec.adapters.kvstore import KVStoreCheckpointStore
    from mailsec.adapters.splunkd import Splunkd
    from mailsec.audit.budget import COLLECTION

    splunkd.ensure_collection(COLLECTION)  # as collections.conf declares it
    connection = Splunkd(splunkd.server_uri, splunkd.session_key)
    inputs = []
    for name, prefix in (("in_a", "a"), ("in_b", "b")):
        work = os.path.join(workdir, name)
        os.mkdir(work)
        inputs.append(
            Harness(
                sim,
                pgp_keys,
                clock,
                str(work),
                budget_store=KVStoreCheckpointStore(connection, COLLECTION),
                name=name,
                users=",".join(f"{prefix}{i}" for i in range(25)),
                daily_request_budget="30",
                export_every="1h",
                first_begin_date="2026-03-02T09:00:00Z",
            )
        )
    sim.polls_until_done = 1000  # keep exports pending: only creation is measured
    barrier = threading.Barrier(2)
    failures = []

    def drive(h: Harness) -> None:
        try:
            for _ in range(3):
                barrier.wait(timeout=30)
                h.run()
        except Exception as error:  # pragma: no cover - reported below
            failures.append(error)
            barrier.abort()  # the other input stops waiting for this one

    threads = [threading.Thread(target=drive, args=(h,)) for h in inputs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sim.calls["create"] == 30  # 50 users x 3 windows wanted, 30 allowed
    assert sim.calls["quota_refused"] == 0
    records = splunkd.kv_records(COLLECTION)
    slots = sorted(key for key in records if not key.endswith("exhausted"))
    assert slots == [f"example.com|2026-03-02|{n:03d}" for n in range(30)]
    owners = Counter(json.loads(records[key]["state"])["owner"] for key in slots)
    created = Counter(e["input"] for h in inputs for e in h.lifecycle("created"))
    assert owners == created and sum(created.values()) == 30  # one request per slot held
    # the KV store refused inserts of existing keys (409) and nothing broke
    inserts = [
        r
        for r in splunkd.requests_log
        if r.method == "POST" and r.path.rstrip("/").endswith(f"/data/{COLLECTION}")
    ]
    assert len(inserts) > len(records)
    assert splunkd.errors == [] and splunkd.unexpected_requests == []
    for h in inputs:
        assert len(h.lifecycle("budget_exhausted")) == 1
    # the next UTC day the budget is fresh
    clock.advance(days=1)
    inputs[0].run()
    assert sim.calls["create"] == 60


def test_interrupted_creation_is_found_in_the_list_feed_not_requested_again(
    harness, sim, monkeypatch
):
    h = harness(users="alice")
    real_create = api_module.AuditApi.create_export

    class Killed(BaseException):
        pass

    def create_then_die(self, *args, **kwargs):
        real_create(self, *args, **kwargs)
        raise Killed

    monkeypatch.setattr(api_module.AuditApi, "create_export", create_then_die)
    with pytest.raises(Killed):
        h.run()
    monkeypatch.setattr(api_module.AuditApi, "create_export", real_create)
    h.run_until_idle()
    assert sim.calls["create"] == 1 and sim.calls["list"] == 1
    assert_exactly_once(h, sim)


def test_list_feed_pages_of_100_follow_next(harness, sim, clock):
    from audit.simulator import Export

    now = datetime.fromtimestamp(clock(), timezone.utc)
    for n in range(250):
        sim.exports[str(n)] = Export(
            str(n),
            "alice",
            "2026-03-01 00:00",
            "2026-03-02 00:00",
            "false",
            None,
            "FULL_MESSAGE",
            now,
            1,
        )
    h = harness(users="alice")
    service = _service(h)
    found = [r.request_id for r in service.api.list_exports(None)]
    assert found == [str(n) for n in range(250)]
    assert sim.calls["list"] == 3


def _service(h: Harness):
    from mailsec.audit.auth import ServiceAccount, TokenProvider
    from mailsec.audit.service import AuditExportService
    from mailsec.core.http import HttpClient

    service = AuditExportService(h.input_run())
    http = HttpClient(ca_bundle_pem=service.account.ca_bundle)
    tokens = TokenProvider(
        http,
        ServiceAccount.from_json(service.account.service_account_json),
        service.account.admin_email,
        service.account.token_url,
        clock=h.clock,
    )
    service.api = api_module.AuditApi(http, service.account.api_url, service.domain, tokens)
    return service


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("admin_email", "someone@example.com", "domain-wide delegation"),
        ("token_url", None, "wrong audience"),
    ],
)
def test_token_endpoint_checks_subject_and_audience(harness, sim, field, value, match):
    h = harness(users="alice")
    if field == "token_url":
        h.account["token_url"] = sim.token_url + "?other"
    else:
        h.account[field] = value
    with pytest.raises(AuthError, match=match):
        h.run()


def test_public_key_is_uploaded_once_and_again_when_it_changes(harness, sim, other_pgp_keys):
    h = harness(users="alice")
    h.run()
    h.run()
    assert sim.calls["publickey"] == 1
    h.account["pgp_public_key"] = h.account["pgp_public_key"] + "\n\n"
    h.run()
    assert sim.calls["publickey"] == 1  # whitespace is not a change
    h.account["pgp_public_key"] = other_pgp_keys[0]
    h.run()
    assert sim.calls["publickey"] == 2


def test_no_plaintext_on_disk_during_or_after_a_run(harness, sim, workdir):
    """While messages are written, the work folder holds only the encrypted
    download and the GnuPG home; after the run it is gone."""
    begin, end = "2026-03-01 12:00", "2026-03-02 12:00"
    # the messages the export will hold, known before the first run
    specs = sim.specs_for("alice", begin, end)
    markers = [spec.message_id.encode() for spec in specs]
    markers += [spec.body.encode()[:30] for spec in specs if spec.body.strip()]
    sim.polls_until_done = 1  # the first run already downloads and decrypts
    h = harness(users="alice", include_body="true", first_begin_date="2026-03-01T12:00:00Z")
    seen_files = set()
    looked = []
    real_write = h.sink.write

    def write_and_look(events):
        for base, _dirs, files in os.walk(workdir):
            for name in files:
                path = os.path.join(base, name)
                seen_files.add(os.path.relpath(path, workdir))
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue  # gpg-agent's sockets
                with open(path, "rb") as handle:
                    data = handle.read()
                for marker in markers:
                    assert marker not in data, f"plaintext in {path}"
                looked.append(path)
        return real_write(events)

    h.sink.write = write_and_look
    h.run()
    written = {m["message_id"] for m in h.messages()}
    assert written == {f"<{spec.message_id}>" for spec in specs}  # all in the first run
    assert [s.message_id for s in sim.exports["53156"].specs] == [s.message_id for s in specs]
    assert any(path.endswith(".pgp") for path in looked)  # the check did read the download
    h.run_until_idle()
    assert h.leftovers() == []
