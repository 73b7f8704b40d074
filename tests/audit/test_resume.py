"""Killed at any point, restarted: every message ends up indexed exactly once (by event_id).

In-process kills raise a BaseException at the chosen point, which no `except
Exception` can swallow; the checkpoint store and the sink keep what a real crash
would keep. test_e2e_audit.py kills the real script with SIGKILL as well.
"""

from __future__ import annotations

import contextlib
import random

import pytest

from audit.test_service import assert_exactly_once
from mailsec.audit import download as download_module
from mailsec.audit import pipeline
from mailsec.audit.decrypt import GnupgSession
from mailsec.audit.message import MessageParser


class Killed(BaseException):
    pass


class Trigger:
    """Raises Killed at the n-th call (n drawn from a seeded generator), `max_kills` times."""

    def __init__(self, seed: int, spread: int, max_kills: int = 4) -> None:
        self.rng = random.Random(seed)
        self.max_kills = max_kills
        self.spread = spread
        self.kills = 0
        self.armed = True
        self._left = self.rng.randint(1, spread)

    def tick(self) -> None:
        if not self.armed:
            return
        self._left -= 1
        if self._left <= 0:
            self.kills += 1
            self.armed = self.kills < self.max_kills
            self._left = self.rng.randint(1, self.spread)
            raise Killed


def install(point: str, trigger: Trigger, harness_, monkeypatch) -> None:
    if point == "download":
        real_iter_body = download_module.iter_body

        def iter_body(response, chunk_size=1 << 20):
            for chunk in real_iter_body(response, 4096):
                yield chunk
                trigger.tick()

        monkeypatch.setattr(download_module, "iter_body", iter_body)
    elif point == "decryption":
        real = GnupgSession.decrypt_chunks

        def decrypt_chunks(self, path):
            for chunk in real(self, path):
                trigger.tick()
                yield chunk

        monkeypatch.setattr(GnupgSession, "decrypt_chunks", decrypt_chunks)
        monkeypatch.setattr("mailsec.audit.decrypt.CHUNK", 4096)
    elif point == "parsing":
        real_feed = MessageParser.feed

        def feed(self, data):
            trigger.tick()
            return real_feed(self, data)

        monkeypatch.setattr(MessageParser, "feed", feed)
        # messages of ordinary size are parsed whole (the fast path), not fed
        real_parse_whole = pipeline.parse_whole

        def parse_whole(raw, *args):
            trigger.tick()
            return real_parse_whole(raw, *args)

        monkeypatch.setattr(pipeline, "parse_whole", parse_whole)
    elif point == "after_events":
        sink = harness_.sink
        real_write = sink.write

        def write(events):
            events = list(events)
            written = real_write(events)
            if any(e.sourcetype.endswith("message") for e in events):
                trigger.tick()  # written and flushed, the checkpoint not yet saved
            return written

        sink.write = write


@pytest.mark.parametrize(
    ("point", "spread"),
    [("download", 12), ("decryption", 6), ("parsing", 15), ("after_events", 2)],
)
def test_killed_and_restarted_every_message_exactly_once(harness, sim, monkeypatch, point, spread):
    sim.messages_per_export = 12
    monkeypatch.setattr(pipeline, "BATCH_MESSAGES", 2)  # several checkpoints per file
    h = harness(users="alice,bob")
    trigger = Trigger(seed=len(point) * 7919, spread=spread)
    install(point, trigger, h, monkeypatch)
    for _ in range(60):
        with contextlib.suppress(Killed):
            h.run()
        state = h.checkpoints.get(h.name) or {}
        if state.get("users") and not state.get("requests"):
            break
        h.clock.advance(minutes=15)
    else:
        raise AssertionError("did not finish")
    assert trigger.kills >= 2, "the kill point was not reached"
    assert_exactly_once(h, sim)
    if point == "after_events":
        # the replayed batches are duplicates by event_id only, never new ids
        assert len(h.messages()) > len({m["event_id"] for m in h.messages()})
    assert h.leftovers() == []
    assert len(h.lifecycle("deleted")) == 2
