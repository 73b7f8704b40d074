"""Hostile XML (a DTD, entity expansion, an external entity) in any answer of the
API is refused without expanding anything, and never crashes the input (docs/audit_export.md):
the answer is logged with where it came from, an `error` event is written, the
checkpoint does not move for what the answer was about, and the rest goes on
where that is safe."""

from __future__ import annotations

import logging

import pytest

from audit.simulator import BILLION_LAUGHS, EXTERNAL_ENTITY
from audit.test_service import assert_exactly_once
from mailsec.audit import api as api_module
from mailsec.audit.api import HostileXml, parse_xml

# what an expanded entity would leave behind: the laughs, the file's content
EXPANSION_TEXT = ("lollol", "root:", "/etc/passwd", "<!ENTITY", "<!DOCTYPE")


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.DEBUG, logger="test.audit")
    return caplog


def assert_refused(h, sim, logs, endpoint: str, **context) -> list:
    """The hostile answer was served and refused: an error event and a log line
    naming the endpoint and `context`, and no expansion text anywhere."""
    assert sim.calls[f"hostile_{endpoint}"] >= 1, "the hostile answer was never served"
    errors = [e for e in h.lifecycle("error") if e.get("endpoint") == endpoint]
    assert errors, f"no error event for the refused {endpoint} answer"
    lines = [r.getMessage() for r in logs.records if "audit_xml_refused" in r.getMessage()]
    assert lines and all(f"endpoint={endpoint}" in line for line in lines)
    for event in errors:
        assert "DTD or entity declaration" in event["error"]
        for name, value in context.items():
            assert event[name] == value, name
    for name, value in context.items():
        assert all(f"{name}={value}" in line for line in lines), name
    everything = "\n".join(
        [event.to_json() for event in h.sink.events] + [r.getMessage() for r in logs.records]
    )
    for text in EXPANSION_TEXT:
        assert text not in everything
    return errors


@pytest.mark.parametrize("kind", ["billion_laughs", "external_entity"])
def test_hostile_public_key_answer_requests_nothing_until_the_upload_is_confirmed(
    harness, sim, logs, kind
):
    sim.serve_hostile(kind, "publickey")
    h = harness(users="alice")
    h.run()  # no exception: refused, not crashed
    assert_refused(h, sim, logs, "publickey")
    assert "public_key" not in (h.checkpoints.get("audit1") or {})  # not taken as uploaded
    assert sim.calls["create"] == 0  # nothing requested against an unconfirmed key

    sim.serve_hostile(None, "publickey")
    h.run_until_idle()
    assert sim.calls["publickey"] == 2  # uploaded again, confirmed this time
    assert_exactly_once(h, sim)


def test_hostile_create_answer_keeps_the_window_and_is_settled_from_the_list(harness, sim, logs):
    sim.serve_hostile("external_entity", "create")
    h = harness(users="alice,bob", first_begin_date="2026-03-01T12:00:00Z")
    h.run()
    assert_refused(h, sim, logs, "create", user="alice@example.com", begin_date="2026-03-01 12:00")
    state = h.checkpoints.get("audit1")
    assert state["requests"] == {}
    # the window did not move on, and the request in flight is kept to be looked up
    assert state["users"]["alice"]["next"] == "2026-03-01 12:00"
    assert state["creating"]["user"] == "alice"
    # one request in flight at a time: bob waits for the next run
    assert sim.calls["create"] == 1 and "bob" not in state["users"]

    sim.serve_hostile(None, "create")
    h.run_until_idle()
    # alice's export, made by Google despite the refused answer, was found in the
    # list feed and adopted, not requested again
    assert sim.calls["create"] == 2 and sim.calls["list"] == 1
    assert sorted(e.user for e in sim.exports.values()) == ["alice", "bob"]
    assert_exactly_once(h, sim)


def test_hostile_status_answer_for_one_user_leaves_the_others_going(harness, sim, logs, clock):
    sim.serve_hostile("billion_laughs", "status", user="alice")
    h = harness(users="alice,bob")
    h.run()
    clock.advance(minutes=15)
    h.run()  # bob's export completes and is processed; alice's answers are refused
    alice_id = next(rid for rid, e in sim.exports.items() if e.user == "alice")
    errors = assert_refused(h, sim, logs, "status", request_id=alice_id, user="alice@example.com")
    assert len(errors) == 2  # one per refused poll, each its own event
    assert len({e["event_id"] for e in errors}) == 2
    state = h.checkpoints.get("audit1")
    assert state["requests"][alice_id]["status"] == "PENDING"  # not advanced
    assert sim.exports[alice_id].status == "COMPLETED"  # though it is at Google
    assert {m["user"] for m in h.messages()} == {"bob@example.com"}
    assert [e["user"] for e in h.lifecycle("deleted")] == ["bob@example.com"]

    sim.serve_hostile(None, "status", user="alice")
    h.run_until_idle()
    assert_exactly_once(h, sim)


def test_hostile_list_answer_requests_nothing_while_a_request_is_unsettled(
    harness, sim, logs, monkeypatch
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

    sim.serve_hostile("external_entity", "list")
    h.run()
    assert_refused(h, sim, logs, "list", user="alice@example.com")
    assert sim.calls["create"] == 1  # not requested a second time
    assert h.checkpoints.get("audit1")["creating"]["user"] == "alice"

    sim.serve_hostile(None, "list")
    h.run_until_idle()
    assert sim.calls["create"] == 1
    assert_exactly_once(h, sim)


def test_hostile_delete_answer_keeps_the_request_to_delete_next_run(harness, sim, logs, clock):
    sim.serve_hostile("billion_laughs", "delete")
    h = harness(users="alice")
    h.run()
    clock.advance(minutes=15)
    h.run()
    errors = assert_refused(h, sim, logs, "delete", request_id="53156", user="alice@example.com")
    assert len(errors) == 1
    assert_exactly_once(h, sim)  # the messages were indexed before the delete
    request = h.checkpoints.get("audit1")["requests"]["53156"]
    assert request["phase"] == "deleting"  # still to delete
    assert h.lifecycle("deleted") == []
    assert h.leftovers() == []

    sim.serve_hostile(None, "delete")
    h.run()
    assert [e["request_id"] for e in h.lifecycle("deleted")] == ["53156"]
    assert h.checkpoints.get("audit1")["requests"] == {}


def test_parse_xml_refuses_entities_without_expanding_them():
    for document in (BILLION_LAUGHS, EXTERNAL_ENTITY):
        with pytest.raises(HostileXml) as refused:
            parse_xml(document)
        for text in EXPANSION_TEXT:
            assert text not in str(refused.value)
