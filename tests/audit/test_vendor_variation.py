"""audit_export under vendor variation and misconfiguration (issue 10, points 1, 2 and
the per-user retry map of 5): refused at save time, dates read leniently, a window
given up made visible, one request never holding up the others."""

from __future__ import annotations

import pytest

from audit.test_robustness import _refuse_creations
from audit.test_service import expected_messages
from mailsec.audit.config import AuditInputConfig
from mailsec.core.params import ConfigError


def test_include_deleted_with_a_search_query_is_refused_naming_both_fields():
    with pytest.raises(ConfigError) as refused:
        AuditInputConfig.from_params(
            {"account": "g", "users": "alice", "include_deleted": "1", "search_query": "a"}
        )
    assert "include_deleted" in str(refused.value) and "search_query" in str(refused.value)
    # either one alone is fine
    AuditInputConfig.from_params({"account": "g", "users": "alice", "include_deleted": "1"})
    AuditInputConfig.from_params({"account": "g", "users": "alice", "search_query": "a"})


def test_a_saved_input_with_both_never_requests_an_export(harness, sim):
    """An input saved before the check (or by hand in inputs.conf) is refused at run
    time too: no budget slot is spent."""
    h = harness(users="alice", include_deleted="true", search_query="from:bob")
    with pytest.raises(ConfigError, match="include_deleted"):
        h.run()
    assert sim.calls["create"] == 0 and h.budget_store.inserts == 0


def _given_up(h) -> list:
    return [e for e in h.lifecycle("error") if e.get("given_up")]


def test_a_window_refused_for_good_gives_an_error_event_and_its_retry_count_goes(harness, sim):
    from mailsec.audit.service import MAX_WINDOW_RETRIES

    _refuse_creations(sim, 400, times=100)
    h = harness(users="alice")
    for _ in range(MAX_WINDOW_RETRIES + 3):
        h.run()
        h.clock.advance(minutes=15)
    given_up = _given_up(h)
    assert len(given_up) == 1
    event = given_up[0]
    assert event["user"] == "alice@example.com" and event["attempts"] == MAX_WINDOW_RETRIES + 1
    assert event["begin_date"] and event["end_date"] and "given up" in event["error"]
    alice = h.checkpoints.get("audit1")["users"]["alice"]
    assert alice["redo"] == [] and alice.get("retries", {}) == {}  # nothing kept for ever
    # the health dashboard lists it: its search selects this event and shows its fields
    shown = _health_panel_fields("given_up=true")
    assert set(shown) - {"_time"} <= set(event)


def _health_panel_fields(marker: str) -> list:
    """The fields the health dashboard's panel (found by `marker` in its query) tables."""
    from pathlib import Path

    import defusedxml.ElementTree as SafeET

    view = Path(__file__).parents[2] / "package/default/data/ui/views/mailsec_health.xml"
    queries = [q.text for q in SafeET.parse(str(view)).iter("query") if marker in q.text]
    assert len(queries) == 1, queries
    query = queries[0]
    assert 'sourcetype="google:workspace:audit:export"' in query and "action=error" in query
    return query.rsplit("| table ", 1)[1].split()


def test_a_window_whose_exports_keep_failing_gives_an_error_event(harness, sim):
    sim.error_users.add("alice")
    h = harness(users="alice")
    for _ in range(12):
        h.run()
        h.clock.advance(minutes=15)
    given_up = _given_up(h)
    assert len(given_up) == 1 and given_up[0]["request_id"]
    assert "ERROR" in given_up[0]["error"]
    assert sim.calls["create"] == 4  # the first request and 3 retries
    alice = h.checkpoints.get("audit1")["users"]["alice"]
    assert alice["redo"] == [] and alice.get("retries", {}) == {}


def test_retry_counts_leave_the_checkpoint_once_the_window_has_its_export(harness, sim):
    _refuse_creations(sim, 400, times=1)
    h = harness(users="alice")
    h.run()  # refused
    assert h.checkpoints.get("audit1")["users"]["alice"]["retries"]
    h.clock.advance(minutes=15)
    h.run_until_idle()  # created, indexed
    assert h.checkpoints.get("audit1")["users"]["alice"].get("retries", {}) == {}
    assert len(h.messages()) == sim.messages_per_export


@pytest.mark.parametrize(
    "form",
    [
        "%Y-%m-%d %H:%M:%S",  # with seconds
        "%Y-%m-%dT%H:%M:%SZ",  # ISO 8601 'T'
        "%Y-%m-%dT%H:%M:%S.000Z",
        "%Y-%m-%d",  # a bare date
        "soon",  # unreadable: messages without a Date take the run's time
    ],
)
def test_a_completed_date_in_another_form_holds_up_nothing(harness, sim, form):
    sim.completed_date_forms["alice"] = form
    h = harness(users="alice,bob")
    h.run_until_idle()
    got = {m["message_id"] for m in h.messages()}
    assert got == set(expected_messages(sim))  # both users, every message
    assert {e["user"] for e in h.lifecycle("deleted")} == {"alice@example.com", "bob@example.com"}
    assert not h.lifecycle("error")


def test_an_unforeseen_answer_holds_up_only_its_own_request(harness, sim, monkeypatch):
    """Whatever one request's answer raises, the other users' exports go on, and that
    request is tried again on the next run."""
    from mailsec.audit.api import AuditApi

    real_status = AuditApi.status
    broken = {"on": True}

    def status(self, user, request_id):
        if user == "alice" and broken["on"]:
            raise KeyError("a property this code did not foresee")
        return real_status(self, user, request_id)

    monkeypatch.setattr(AuditApi, "status", status)
    h = harness(users="alice,bob")
    for _ in range(3):
        h.run()
        h.clock.advance(minutes=15)
    users = {m["user"] for m in h.messages()}
    assert users == {"bob@example.com"}
    errors = [e for e in h.lifecycle("error") if "KeyError" in e["error"]]
    assert errors and errors[0]["user"] == "alice@example.com"
    broken["on"] = False
    h.run_until_idle()
    assert {m["message_id"] for m in h.messages()} == set(expected_messages(sim))


@pytest.mark.slow
def test_the_script_refuses_both_at_save_time_naming_both_fields(installed_app, splunkd):
    """What splunkd runs when the input is saved: `audit_export.py --validate-arguments`."""
    from harness import modinput

    result = modinput.validate(
        installed_app / "bin" / "audit_export.py",
        "audit_export://probe",
        {"account": "g", "users": "alice", "include_deleted": "true", "search_query": "x"},
        server_uri=splunkd.server_uri,
        session_key=splunkd.session_key,
    )
    assert not result.ok
    assert result.message.startswith("include_deleted:") and "search_query" in result.message
