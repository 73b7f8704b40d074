"""vault_export's behaviour against the Vault + Cloud Storage simulator, in process,
on a fake clock: windows, matter, ceilings and quotas, damaged files, archive forms."""

from __future__ import annotations

import subprocess
import zipfile
from collections import Counter
from datetime import timedelta

import pytest

from mailsec.core.google_auth import AuthError
from vault import archive
from vault.conftest import MESSAGE
from vault.simulator import VaultExport, VaultSimulator

FIRST = "2026-02-27"  # the fake clock starts 2026-03-02 12:00 UTC: 3 whole days are due


def ids(harness) -> Counter:
    return Counter(m["event_id"] for m in harness.messages())


def assert_every_message_once(harness, sim) -> None:
    messages = harness.messages()
    by_id = {m["event_id"]: m for m in messages}
    assert sorted(m["message_id"] for m in by_id.values()) == sorted(sim.expected_message_ids())
    assert len({m["message_id"] for m in by_id.values()}) == len(by_id)


def test_two_users_three_days_every_message_once_with_source_fields(harness, sim):
    h = harness(first_begin_date=FIRST)
    h.run_until_idle()
    messages = h.messages()
    assert len(messages) == len(sim.expected_message_ids()) == 2 * 3 * sim.messages_per_export
    assert len(ids(h)) == len(messages)  # nothing twice, even by accident
    specs = {
        f"<{spec.message_id}>": spec
        for by_account in sim.completed_specs.values()
        for specs in by_account.values()
        for spec in specs
    }
    for message in messages:
        expected = specs[message["message_id"]].expected_fields()
        for name, value in expected.items():
            assert message[name] == value, (name, message["message_id"])
        assert message["api"] == "vault"
        assert message["request_id"].startswith("exportly-")
    # deleted once downloaded, and every in-progress slot given back
    assert sim.calls["delete"] == 6 and not sim.exports
    assert not h.slot_store.data
    actions = Counter(e["action"] for e in h.lifecycle())
    assert actions["created"] == actions["downloaded"] == actions["deleted"] == 6
    assert actions["extracted"] == 6


def test_whole_utc_days_per_user_without_gap_or_overlap(harness, sim, clock):
    h = harness(first_begin_date=FIRST, delete_after_download="false")
    h.run_until_idle()
    clock.advance(days=2)
    h.run_until_idle()
    for user in ("alice@example.com", "bob@example.com"):
        windows = sorted((e.start, e.end) for e in sim.exports.values() if e.emails == [user])
        assert len(windows) == 5
        for (start, end), (next_start, _) in zip(windows, windows[1:]):
            assert end == next_start and end - start == timedelta(days=1)
        assert all(s.hour == s.minute == 0 for s, _ in windows)
        body = next(e.body for e in sim.exports.values() if e.emails == [user])
        assert body["query"]["timeZone"] == "UTC"
        assert body["query"]["startTime"].endswith("T00:00:00Z")
    # kept when delete_after_download is false
    assert sim.calls["delete"] == 0 and len(sim.exports) == 10


def test_the_matter_is_created_once_and_remembered(harness, sim):
    h = harness(first_begin_date=FIRST)
    h.run_until_idle()
    h.run()
    assert sim.calls["create_matter"] == 1
    assert h.state()["matter_id"] in sim.matters
    # a new checkpoint (a lost answer to the creation): found again by name
    h.checkpoints.data.clear()
    h.run()
    assert sim.calls["create_matter"] == 1


def test_a_given_matter_is_used_and_a_closed_one_refused(harness, sim):
    matter = "given-matter-1"
    sim.matters[matter] = {"matterId": matter, "name": "legal", "state": "OPEN"}
    h = harness(first_begin_date=FIRST, matter_id=matter)
    h.run_until_idle()
    assert sim.calls["create_matter"] == 0
    assert sim.creates_by_matter == {matter: 6}
    assert len(h.messages()) == 6 * sim.messages_per_export
    sim.matters[matter]["state"] = "CLOSED"
    creates = sim.calls["create"]
    h.clock.advance(days=1)
    h.run()
    assert sim.calls["create"] == creates
    error = h.lifecycle("error")[-1]
    assert "CLOSED" in error["error"] and "matter_id" in error["error"]


def test_ceiling_held_with_two_inputs_on_one_domain(harness, sim):
    sim.enforce_rate_quota = False
    sim.polls_until_done = 2
    first = harness(name="one", first_begin_date=FIRST, max_exports_in_progress=3)
    second = harness(
        name="two",
        first_begin_date=FIRST,
        max_exports_in_progress=3,
        users="carol,dave",
        slot_store=first.slot_store,
    )
    for _ in range(12):
        first.run()
        second.run()
        assert sim.in_progress() <= 3
        first.clock.advance(minutes=15)
    assert sim.peak_in_progress == 3
    assert len(first.messages()) + len(second.messages()) == 12 * sim.messages_per_export
    assert not first.slot_store.data


def test_quota_answers_defer_and_lose_no_window(harness, sim):
    sim.quota_429 = 4
    h = harness(first_begin_date=FIRST)
    h.run_until_idle()
    assert sim.calls["429"] >= 4
    assert_every_message_once(h, sim)
    assert len(sim.completed_specs) == 6
    assert max(sim.creates_by_name.values()) == 1


def test_org_ceiling_answer_defers(harness, sim):
    sim.in_progress_limit = 1
    sim.enforce_rate_quota = False
    h = harness(first_begin_date=FIRST)
    h.run_until_idle(limit=20)
    assert sim.calls["ceiling_refused"] >= 1
    assert len(sim.completed_specs) == 6


def test_a_lost_create_answer_is_settled_by_name_never_sent_twice(harness, sim):
    sim.lose_create_answer = 1
    sim.enforce_rate_quota = False
    h = harness(first_begin_date=FIRST)
    h.run()
    assert h.state()["creating"]  # unknown outcome: kept for the next run
    h.run_until_idle()
    assert max(sim.creates_by_name.values()) == 1
    assert sim.calls["create"] == 6
    assert_every_message_once(h, sim)


def test_failed_export_gives_an_error_and_the_window_is_requested_again(harness, sim):
    sim.fail_users["alice"] = 1
    sim.enforce_rate_quota = False
    h = harness(first_begin_date=FIRST)
    h.run_until_idle()
    errors = [e for e in h.lifecycle("error") if "FAILED" in e["error"]]
    assert len(errors) == 1 and errors[0]["user"] == "alice@example.com"
    assert any(name.endswith("retry 1") for name in sim.creates_by_name)
    assert_every_message_once(h, sim)
    assert len(h.messages()) == 6 * sim.messages_per_export


def test_failed_three_times_more_the_window_is_given_up(harness, sim):
    sim.fail_users["alice"] = 12
    sim.enforce_rate_quota = False
    h = harness(first_begin_date=FIRST, users="alice")
    h.run_until_idle(limit=30)
    given_up = [e for e in h.lifecycle("error") if e.get("given_up")]
    assert len(given_up) == 3  # one per day, each after 1 + 3 attempts
    assert sim.calls["create"] == 12


def test_wrong_md5_gives_an_error_and_a_retry_other_files_go_through(harness, sim):
    sim.wrong_md5["alice"] = 1
    sim.enforce_rate_quota = False
    h = harness(first_begin_date=FIRST)
    h.run_until_idle()
    errors = [e for e in h.lifecycle("error") if "MD5" in e["error"]]
    assert len(errors) == 1 and errors[0]["user"] == "alice@example.com"
    # the file was read again: its messages were written twice, with the same event_ids
    assert_every_message_once(h, sim)
    assert len(ids(h)) == 6 * sim.messages_per_export
    assert sim.calls["delete"] == 6


def test_truncated_object_gives_errors_then_is_given_up_others_go_through(harness, sim):
    sim.truncated.add("alice")
    sim.enforce_rate_quota = False
    h = harness(first_begin_date=FIRST, users="alice,bob")
    for _ in range(4):
        h.run()
        h.clock.advance(minutes=15)
    errors = [e for e in h.lifecycle("error") if e.get("file_index")]
    assert errors and all(e["user"] == "alice@example.com" for e in errors)
    assert all("shorter" in e["error"] or "holds" in e["error"] for e in errors)
    assert any("given up" in e["error"] for e in errors)
    users = Counter(m["user"] for m in h.messages())
    assert users == {"bob@example.com": 3 * sim.messages_per_export}
    # alice's exports are kept for inspection (not deleted), bob's are
    assert sum(e.emails == ["alice@example.com"] for e in sim.exports.values()) == 3


def test_a_zip_damaged_at_google_is_an_error_and_the_others_go_through(harness, sim):
    sim.damaged.add("alice")
    sim.enforce_rate_quota = False
    sim.messages_per_export = 30
    h = harness(first_begin_date="2026-03-01")
    for _ in range(4):
        h.run()
        h.clock.advance(minutes=15)
    errors = [e for e in h.lifecycle("error") if e.get("file_index")]
    assert len(errors) == 3 and all(e["user"] == "alice@example.com" for e in errors)
    assert "given up" in errors[-1]["error"]
    assert {m["user"] for m in h.messages()} >= {"bob@example.com"}
    bob = {m["message_id"] for m in h.messages() if m["user"] == "bob@example.com"}
    assert len(bob) == 30


def test_5xx_bursts_and_a_dropped_connection_are_ridden_out(harness, sim):
    sim.enforce_rate_quota = False
    sim.messages_per_export = 60  # files of a few hundred KiB
    sim.bursts_5xx = 3
    sim.drop_after["alice"] = 70000
    h = harness(first_begin_date=FIRST)
    h.run_until_idle()
    assert not h.lifecycle("error")
    assert_every_message_once(h, sim)
    ranges = [r for name, r in sim.range_requests if r and not r.startswith("bytes=0-")]
    assert any(r.startswith("bytes=") and r.endswith("-") for r in ranges)  # the resumption


@pytest.mark.parametrize("form", ["nested", "nested_deflated", "zip64"])
def test_archive_forms(harness, sim, form):
    sim.form = form
    sim.enforce_rate_quota = False
    sim.mbox_files_per_export = 2
    h = harness(first_begin_date=FIRST)
    h.run_until_idle()
    assert not h.lifecycle("error")
    assert_every_message_once(h, sim)
    extracted = h.lifecycle("extracted")
    if form.startswith("nested"):
        assert all("/mail-1.zip/" in e["file_index"] for e in extracted)


def test_the_zip64_form_is_real_zip64(tmp_path):
    data = archive.mbox_zip([("a.mbox", b"From x\n\nhello\n")], form="zip64")
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data  # ZIP64 end record and locator
    path = tmp_path / "z.zip"
    path.write_bytes(data)
    check = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert zipfile.ZipFile(path).read("a.mbox") == b"From x\n\nhello\n"


def test_a_done_member_is_not_read_again_after_a_restart(harness, sim):
    """Stopped after the first batch of a member: the next run goes on after it."""
    sim.enforce_rate_quota = False
    sim.messages_per_export = 450  # three batches of 200
    h = harness(first_begin_date=FIRST, users="alice")

    write = h.sink.write

    def write_then_stop(events):
        written = write(events)
        if any(e.sourcetype == MESSAGE for e in events):
            h.stop.set()  # as SIGTERM would, right after the first batch of messages
        return written

    h.sink.write = write_then_stop
    h.run()  # creates
    h.clock.advance(minutes=15)
    h.run()  # downloads, and stops after the first batch
    assert len(h.messages()) == 200
    state = h.state()["requests"]
    (entry,) = [f for r in state.values() for f in r["files"].values() if f["members"]]
    assert [m["written"] for m in entry["members"].values()] == [200]
    h.sink.write = write
    h.stop.clear()
    h.run_until_idle()
    assert len(h.messages()) == 3 * 450  # nothing written twice
    assert_every_message_once(h, sim)


def test_warning_three_days_before_google_deletes_then_expired(harness, sim, clock):
    sim.enforce_rate_quota = False
    sim.truncated.add("alice")  # never processed
    h = harness(first_begin_date="2026-03-01", users="alice")
    h.run()
    clock.advance(days=11, hours=23)
    h.run()
    assert not h.lifecycle("warning")
    clock.advance(hours=2)
    h.run()
    warning = h.lifecycle("warning")
    assert len(warning) == 1 and "deletes it at" in warning[0]["error"]
    clock.advance(days=3)
    h.run()
    expired = h.lifecycle("expired")
    assert len(expired) == 1 and expired[0]["messages"] == 0
    # nothing of it was indexed: the window is requested again
    assert (
        "TA_mailsec vault1 alice@example.com 2026-03-01..2026-03-02 retry 1" in sim.creates_by_name
    )


def test_jwt_asks_for_both_scopes(harness, sim):
    sim.granted_scopes = frozenset({"https://www.googleapis.com/auth/ediscovery"})
    h = harness(first_begin_date=FIRST)
    with pytest.raises(AuthError, match=r"devstorage\.read_only"):
        h.run()


def test_simulator_deletes_exports_after_15_days(ca, clock):
    with VaultSimulator(ca, clock=clock) as sim:
        sim.matters["m"] = {"matterId": "m", "name": "m", "state": "OPEN"}
        now = sim.now()
        sim.exports["e"] = VaultExport("e", "m", "n", {}, ["a@example.com"], now, now, now, 0)
        clock.advance(days=14, hours=23)
        assert sim.in_progress() == 1
        clock.advance(hours=1)
        assert sim.in_progress() == 0 and sim.calls["deleted_by_google"] == 1


def test_events_have_the_message_sourcetype(harness, sim):
    h = harness(first_begin_date="2026-03-01", users="alice")
    h.run_until_idle()
    assert {e.sourcetype for e in h.sink.events} == {MESSAGE, "google:workspace:audit:export"}
