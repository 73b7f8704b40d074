"""The shared mailbox pipeline (mailsec.core.mailbox) used on its own, as vault_export
uses it: mbox bytes streamed out of a zip member, events tagged with their API, a
restart going on after the last message written, window plans with no gap."""

from __future__ import annotations

import io
import logging
import zipfile
from datetime import datetime, timedelta, timezone

import pytest
from audit.corpus import build, mbox

from mailsec.core.events import ListSink
from mailsec.core.mailbox.files import FileIndexer, new_entry, settled
from mailsec.core.mailbox.lifecycle import Lifecycle
from mailsec.core.mailbox.windows import UserWindows
from mailsec.core.runtime import Stopped
from mailsec.core.timeutil import format_google

BEGIN = datetime(2026, 3, 1, tzinfo=timezone.utc)


def zip_member_chunks(data: bytes, size: int = 7000):
    """The mbox as vault_export reads it: a deflated zip member, streamed."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("alice@example.com/mbox-0001.mbox", data)
    with zipfile.ZipFile(archive) as zipped, zipped.open(zipped.namelist()[0]) as member:
        while True:
            chunk = member.read(size)
            if not chunk:
                return
            yield chunk


def make_indexer(sink, state, api="vault", namespace=("vault",), stop_after=None):
    saves = []

    def save():
        saves.append(dict(state["entry"]))

    def check_stop():
        if stop_after is not None and len(saves) >= stop_after:
            raise Stopped("stop requested")

    lifecycle = Lifecycle(
        sink, "example.com", "in1", None, lambda: 1.8e9, api=api, id_namespace=namespace
    )
    files = FileIndexer(
        lifecycle, save, check_stop, logging.getLogger("t"), api, False, 1024, 3, batch_messages=2
    )
    return files, saves


REQUEST = {"id": "exp-1", "user": "alice@example.com", "begin": "b", "end": "e"}


def test_zip_member_stream_gives_every_message_once_with_its_api(monkeypatch):
    specs = build("alice", BEGIN, 9, "shared")
    sink = ListSink()
    state = {"entry": new_entry()}
    files, _ = make_indexer(sink, state)
    files.index(
        REQUEST, "0/0", state["entry"], zip_member_chunks(mbox(specs, BEGIN)), BEGIN, "extracted"
    )

    messages = [e.data for e in sink.events if e.sourcetype == "google:workspace:mailbox:message"]
    assert [m["message_id"] for m in messages] == [f"<{s.message_id}>" for s in specs]
    for message, spec in zip(messages, specs):
        assert message["api"] == "vault"
        assert message["request_id"] == "exp-1" and message["file_index"] == "0/0"
        assert message["subject"] == spec.subject
    done = [e.data for e in sink.events if e.data.get("action") == "extracted"]
    assert done and done[0]["messages"] == 9 and done[0]["api"] == "vault"
    assert settled(state["entry"]) and state["entry"]["written"] == 9


def test_restart_goes_on_after_the_last_message_written():
    specs = build("alice", BEGIN, 7, "resume")
    data = mbox(specs, BEGIN)
    first, second = ListSink(), ListSink()
    state = {"entry": new_entry()}
    files, _ = make_indexer(first, state, stop_after=2)
    with pytest.raises(Stopped):
        files.index(REQUEST, 0, state["entry"], zip_member_chunks(data), BEGIN, "extracted")
    assert state["entry"]["written"] == 4 and not settled(state["entry"])

    files, _ = make_indexer(second, state)
    files.index(REQUEST, 0, state["entry"], zip_member_chunks(data), BEGIN, "extracted")
    ids = [e.data["message_id"] for e in first.events + second.events if "ordinal" in e.data]
    assert ids == [f"<{s.message_id}>" for s in specs]  # each once, in order


def test_two_apis_never_share_an_event_id():
    """The same user, window and action in both watchers: two distinct events."""
    audit, vault = ListSink(), ListSink()
    for sink, api, namespace in ((audit, "audit", ()), (vault, "vault", ("vault",))):
        lifecycle = Lifecycle(sink, "example.com", "in", None, lambda: 1.8e9, api, namespace)
        lifecycle.window_given_up("alice@example.com", "b", "e", 4, "refused")
    assert audit.events[0].event_id != vault.events[0].event_id
    assert audit.events[0].data["api"] == "audit"


def test_window_plan_has_no_gap_and_keeps_retry_counts_only_while_needed():
    now = [BEGIN + timedelta(days=3)]
    users: dict = {}
    plan = UserWindows(users, timedelta(days=1), lambda: BEGIN, lambda: now[0], max_retries=2)
    due = plan.due("alice")
    assert due == [
        (format_google(BEGIN + timedelta(days=d)), format_google(BEGIN + timedelta(days=d + 1)))
        for d in range(3)
    ]
    first, second, third = due
    assert plan.retry_later("alice", *first) == 1
    plan.created("alice", *second)
    plan.created("alice", *third)
    assert plan.due("alice") == [first]  # refused one comes back, nothing else is due
    assert plan.created("alice", *first) == 1  # its retry count goes with the request
    assert users["alice"].get("retries") == {}
    assert plan.redo("alice", *first, retries=1) == 2  # its export failed: back in the plan
    assert plan.due("alice") == [first]
    assert plan.retry_later("alice", *first) is None  # then refused: given up for good
    assert users["alice"]["retries"] == {} and plan.due("alice") == []
    assert plan.redo("alice", *second, retries=2) is None
