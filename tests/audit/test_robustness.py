"""Defects found in review: one bad message, header or answer must never stop the input."""

from __future__ import annotations

import multiprocessing
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from audit import corpus
from audit.simulator import BILLION_LAUGHS
from audit.test_service import expected_messages
from mailsec.core.timeutil import parse_google

# messages that once made the run raise, and every later run at the same place
CRAFTED = {
    "nul-charset-subject@x": b"Subject: =?utf-8\x00?Q?hi?=\n",
    "nul-charset-body@x": b'Content-Type: text/plain; charset="utf-8\x00"\n',
    "date-overflow@x": b"Date: Fri, 31 Dec 9999 23:59:59 -1200\n",
    "nul-charset-filename@x": (
        b"Content-Type: application/octet-stream\n"
        b"Content-Disposition: attachment; filename*=utf-8\x00''a%41.txt\n"
    ),
}


def _crafted_mbox(good: list, when) -> bytes:
    stamp = when.strftime("%a %b %d %H:%M:%S %Y")
    crafted = b"".join(
        f"From x@example.com {stamp}\nMessage-ID: <{mid}>\n".encode()
        + headers
        + b"From: X <x@example.com>\n\nhello\n\n"
        for mid, headers in CRAFTED.items()
    )
    good_mbox = corpus.mbox(good, when)
    cut = good_mbox.index(b"\nFrom ", 1) + 1 if len(good) > 1 else len(good_mbox)
    return good_mbox[:cut] + crafted + good_mbox[cut:]


def test_malformed_messages_among_good_ones_are_all_indexed(harness, sim):
    original = sim._complete

    def complete_with_crafted(export):
        original(export)
        part = export.specs[0 :: sim.files_per_export]
        plaintext = _crafted_mbox(part, export.completed)
        sim.files[export.files[0]] = sim._encrypt(plaintext)

    sim._complete = complete_with_crafted
    h = harness(users="alice", include_body="true")
    h.run_until_idle()

    got = {m["message_id"]: m for m in h.messages()}
    wanted = set(expected_messages(sim)) | {f"<{mid}>" for mid in CRAFTED}
    assert set(got) == wanted
    assert len(h.messages()) == len(wanted)
    assert h.lifecycle("error") == []
    assert len(h.lifecycle("deleted")) == 1  # the run went on to the end
    completed = sim.exports["53156"].completed.strftime("%Y-%m-%dT%H:%M:00.000000Z")
    assert got["<date-overflow@x>"]["time"] == completed  # the export time
    assert got["<nul-charset-subject@x>"]["subject"]  # decoded with replacement
    assert got["<nul-charset-body@x>"]["body"].startswith("hello")
    decrypted = {e["file_index"]: e for e in h.lifecycle("decrypted")}
    assert decrypted[0]["messages"] == len(CRAFTED) + len(sim.exports["53156"].specs[0::2])


@pytest.mark.parametrize("where", ["parser", "event"])
def test_a_message_that_cannot_be_read_gives_a_minimal_event(harness, sim, monkeypatch, where):
    """Whatever fails on one message (the parser, or building its event), that
    message is indexed with `parse_error` and the export time, and the rest go on."""
    from mailsec.audit import message, pipeline

    h = harness(users="alice")
    h.run()  # created; the messages are made when the export completes
    victim = {}

    if where == "parser":
        real = pipeline.parse_whole

        def parse_whole(raw, *args):
            if victim["id"].encode() in raw:
                raise RuntimeError("boom")
            return real(raw, *args)

        monkeypatch.setattr(pipeline, "parse_whole", parse_whole)
    else:
        real_fields = message.ParsedMessage.fields

        def fields(self):
            if self.header("Message-ID") == f"<{victim['id']}>":
                raise RuntimeError("boom")
            return real_fields(self)

        monkeypatch.setattr(message.ParsedMessage, "fields", fields)
    original = sim._complete

    def complete(export):
        original(export)
        victim["id"] = export.specs[2].message_id  # in file 0, with a From header

    sim._complete = complete
    h.clock.advance(minutes=15)
    h.run_until_idle()

    got = {m["message_id"]: m for m in h.messages()}
    assert set(got) == set(expected_messages(sim))
    bad = got[f"<{victim['id']}>"]
    assert bad["parse_error"] == "RuntimeError"
    assert bad["from"] and bad["size"] > 0
    completed = sim.exports["53156"].completed.strftime("%Y-%m-%dT%H:%M:00.000000Z")
    assert bad["time"] == completed
    assert [m for m in h.messages() if "parse_error" in m] == [bad]
    parse_errors = {e["file_index"]: e["parse_errors"] for e in h.lifecycle("decrypted")}
    assert parse_errors == {0: 1, 1: 0}


def test_nul_in_a_charset_and_a_date_past_year_9999_read_as_replaced_or_missing():
    from mailsec.audit.wholemessage import parse_whole

    for mid, headers in CRAFTED.items():
        raw = f"Message-ID: <{mid}>\n".encode() + headers + b"\nhello\n"
        parsed = parse_whole(raw, True, 100)
        fields = parsed.fields()  # raised ValueError for a NUL in a charset
        assert fields["message_id"] == f"<{mid}>" and "parse_error" not in fields
        assert parsed.date() is None  # 9999-12-31 23:59 -1200 is past datetime.max in UTC
    subject = parse_whole(b"Subject: =?utf-8\x00?Q?hi?=\n\n", False, 0).fields()["subject"]
    assert subject == "hi"


def _fields_seconds(to_value: str) -> float:
    from mailsec.audit.wholemessage import parse_whole

    raw = b"From: a@example.com\nTo: " + to_value.encode() + b"\n\nbody\n"
    started = time.perf_counter()
    parse_whole(raw, False, 0).fields()
    return time.perf_counter() - started


SHAPES = {
    "run_at_dots": lambda n: "a" * (n // 2) + "@" + "." * (n // 2),  # 64 KiB of it took 11 s
    "many_runs_at_dots": lambda n: ",".join(["a" * 400 + "@" + "." * 400] * (n // 802)),
    "distinct_addresses": lambda n: ",".join(f"u{i}@example.com" for i in range(n // 18)),
    "open_angle": lambda n: "<" + "a" * (n // 2) + "@" + "b" * (n // 2),
    "at_signs": lambda n: "a@" * (n // 2),
}


def _measure(connection) -> None:
    size = (1 << 20) - 64  # the header block is kept up to 1 MiB
    baseline = _fields_seconds("x" * size)  # the same size, no address at all
    connection.send(
        (baseline, {name: _fields_seconds(shape(size)[:size]) for name, shape in SHAPES.items()})
    )


def test_a_1_mib_address_header_parses_in_linear_time():
    """Measured in a child process: a quadratic regex would take most of an hour
    on one of these, and a regex cannot be interrupted in a thread."""
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()
    child = context.Process(target=_measure, args=(theirs,))
    child.start()
    try:
        assert ours.poll(30), "1 MiB address headers did not parse within 30 s"
        baseline, timings = ours.recv()
    finally:
        child.kill()
        child.join()
    for name, elapsed in timings.items():
        assert elapsed < 2.0 and elapsed < 50 * max(baseline, 0.01), (name, elapsed, baseline)


def _fail_creations(sim, how: str, times: int = 1) -> dict:
    """The simulator creates the export, then answers `how` instead of 201."""
    left = {"n": times}

    class Flaky(sim.server.RequestHandlerClass):
        def _send(self, status, body, endpoint, user=None):
            if status == 201 and endpoint == "create" and left["n"] > 0:
                left["n"] -= 1
                if how == "drop":  # the connection closes with no answer at all
                    self.close_connection = True
                    return
                if how == "hostile":
                    body = BILLION_LAUGHS
                else:
                    status, body = int(how), b"<html>Bad Gateway</html>"
            super()._send(status, body, endpoint, user)

    sim.server.RequestHandlerClass = Flaky
    return left


@pytest.mark.parametrize("how", ["502", "drop", "hostile"])
def test_creation_answered_with_an_error_after_google_created_it_is_not_repeated(harness, sim, how):
    _fail_creations(sim, how)
    h = harness(users="alice")
    h.run()  # create: the export exists at Google, the answer was lost or refused
    assert sim.calls["create"] == 1
    h.clock.advance(minutes=15)
    h.run_until_idle()  # found in the list feed, recorded, processed
    assert sim.calls["create"] == 1 and sim.calls["list"] == 1
    assert [e["request_id"] for e in h.lifecycle("created")] == ["53156"]
    assert len(h.messages()) == sim.messages_per_export
    assert len(h.lifecycle("deleted")) == 1


def _refuse_creations(sim, status: int, times: int) -> dict:
    left = {"n": times, "refused": 0}

    class Refusing(sim.server.RequestHandlerClass):
        def _create(self, domain, user, body):
            if left["n"] > 0:  # refused before anything is created
                left["n"] -= 1
                left["refused"] += 1
                return self._error(status, "Request conflicts with another request")
            return super()._create(domain, user, body)

    sim.server.RequestHandlerClass = Refusing
    return left


@pytest.mark.parametrize("status", [400, 403, 409])  # a 429 is retried by HttpClient
def test_a_window_google_refused_is_requested_again_no_gap(harness, sim, clock, status):
    _refuse_creations(sim, status, times=1)
    begin = datetime.fromtimestamp(clock(), timezone.utc).replace(hour=0) - timedelta(days=1)
    first = begin.strftime("%Y-%m-%dT%H:%M:%SZ")
    h = harness(users="alice", export_every="12h", first_begin_date=first)
    h.run()  # window 1 refused, windows 2 and 3 created
    assert sim.calls["create"] == 2 and len(h.lifecycle("error")) == 1
    h.run_until_idle()  # window 1 again
    windows = sorted((e.begin, e.end) for e in sim.exports.values())
    assert len(windows) == 3  # 00-12, 12-24 of yesterday, 00-12 today
    assert parse_google(windows[0][0]) == begin
    for (_, end), (next_begin, _) in zip(windows, windows[1:]):
        assert end == next_begin  # no gap
    assert len(h.messages()) == 3 * sim.messages_per_export


def test_a_window_refused_again_and_again_is_given_up_after_the_retries(harness, sim):
    from mailsec.audit.service import MAX_WINDOW_RETRIES

    refusals = _refuse_creations(sim, 400, times=100)
    h = harness(users="alice")
    for _ in range(MAX_WINDOW_RETRIES + 3):
        h.run()
        h.clock.advance(minutes=15)
    assert refusals["refused"] == MAX_WINDOW_RETRIES + 1
    assert h.checkpoints.get("audit1")["users"]["alice"]["redo"] == []


class Killed(BaseException):
    """The process dies (splunkd gone, SIGKILL) while events are being written."""


def _die_once_writing(h, wanted) -> None:
    """The sink dies, before writing, on the first batch holding an event `wanted` picks."""
    real = h.sink.write
    armed = {"on": True}

    def write(events):
        events = list(events)
        if armed["on"] and any(wanted(e.data) for e in events):
            armed["on"] = False
            raise Killed
        return real(events)

    h.sink.write = write


def _file0_errors(h) -> list:
    return [e for e in h.lifecycle("error") if e.get("file_index") == 0]


@pytest.mark.parametrize("case", ["decrypted", "truncated", "file_error", "create_error"])
def test_a_lifecycle_event_lost_in_a_crash_is_written_after_the_restart(harness, sim, case):
    """At-least-once: the checkpoint never records a step whose event was not written."""
    h = harness(users="alice")
    if case == "decrypted":
        _die_once_writing(h, lambda e: e.get("action") == "decrypted")
    elif case == "truncated":
        sim.file_faults["alice"] = {0: "truncated_mbox"}
        _die_once_writing(h, lambda e: "inside message" in e.get("error", ""))
    elif case == "file_error":
        sim.file_faults["alice"] = {0: "corrupt"}
        _die_once_writing(h, lambda e: e.get("action") == "error")
    else:
        _refuse_creations(sim, 400, times=2)
        _die_once_writing(h, lambda e: e.get("action") == "error")
    with pytest.raises(Killed):
        for _ in range(3):
            h.run()
            h.clock.advance(minutes=15)
    h.run()  # the restart
    state = h.checkpoints.get("audit1")
    if case == "decrypted":
        assert {e["file_index"] for e in h.lifecycle("decrypted")} == {0, 1}
    elif case == "truncated":
        assert [e for e in _file0_errors(h) if "inside message" in e["error"]]
    elif case == "file_error":
        # every attempt the checkpoint counts has its error event
        attempts = state["requests"]["53156"]["files"]["0"]["attempts"]
        assert len(_file0_errors(h)) == attempts == 1
    else:
        refusals = state["users"]["alice"]["retries"]
        assert len(h.lifecycle("error")) == sum(refusals.values()) == 1


def _break_downloads(monkeypatch, times: int) -> None:
    """The connection breaks in the middle of a file: requests raises
    ChunkedEncodingError (urllib3's ProtocolError, "Connection broken")."""
    from mailsec.audit import download as download_module

    real = download_module.iter_body
    left = {"n": times}

    def iter_body(response, chunk_size=1 << 20):
        for number, chunk in enumerate(real(response, 4096)):
            if number == 2 and left["n"] > 0:
                left["n"] -= 1
                raise requests.exceptions.ChunkedEncodingError("Connection broken: reset")
            yield chunk

    monkeypatch.setattr(download_module, "iter_body", iter_body)


def _more_files_than_urls(sim, user: str) -> None:
    """numberOfFiles one larger than the fileUrlN properties given."""
    real = sim._entry

    def entry(export, tag="entry"):
        text = real(export, tag)
        if export.user == user and export.status == "COMPLETED":
            count = len(export.files)
            text = text.replace(
                f"name='numberOfFiles' value=\"{count}\"",
                f"name='numberOfFiles' value=\"{count + 1}\"",
            )
        return text

    sim._entry = entry


@pytest.mark.parametrize("fault", ["broken", "empty_url"])
def test_a_download_failure_is_a_file_error_and_the_other_requests_go_on(
    harness, sim, monkeypatch, fault
):
    if fault == "broken":
        _break_downloads(monkeypatch, times=1)
    else:
        _more_files_than_urls(sim, "alice")
    h = harness(users="alice,bob")
    h.run()
    h.clock.advance(minutes=15)
    h.run()  # both completed: alice's first (or missing) file fails, the rest go through
    errors = h.lifecycle("error")
    assert len(errors) == 1 and errors[0]["user"] == "alice@example.com"
    assert errors[0]["file_index"] == (0 if fault == "broken" else 2)
    bob = {e["file_index"] for e in h.lifecycle("decrypted") if e["user"] == "bob@example.com"}
    assert bob == {0, 1}
    if fault == "broken":
        assert "download" in errors[0]["error"]
        h.run_until_idle()  # retried on the next run
        assert len(h.messages()) == 2 * sim.messages_per_export
        assert len(h.lifecycle("deleted")) == 2
    else:
        assert "no URL" in errors[0]["error"]
        assert len(h.messages()) == 2 * sim.messages_per_export
    assert h.leftovers() == []


@pytest.mark.parametrize("problem", ["wrong_passphrase", "other_key"])
def test_a_key_that_cannot_decrypt_is_not_counted_against_the_files(
    harness, sim, other_pgp_keys, problem
):
    """A wrong passphrase or another key is the configuration's fault: the files
    are not given up, and once the account is fixed they are all indexed."""
    from mailsec.audit.service import MAX_FILE_ATTEMPTS

    h = harness(users="alice")
    good = dict(h.account)
    if problem == "wrong_passphrase":
        h.account["pgp_passphrase"] = "not the passphrase"
    else:
        h.account["pgp_private_key"] = other_pgp_keys[1]
        h.account["pgp_passphrase"] = "x"
    for _ in range(MAX_FILE_ATTEMPTS + 1):
        h.run()
        h.clock.advance(minutes=15)
    files = h.checkpoints.get("audit1")["requests"]["53156"]["files"]
    assert all(not f.get("failed") and f.get("attempts", 0) == 0 for f in files.values())
    errors = h.lifecycle("error")
    assert errors and all("pgp_" in e["error"] for e in errors), errors[0]["error"]
    h.account.update(good)
    h.run_until_idle()
    assert len(h.messages()) == sim.messages_per_export
    assert len(h.lifecycle("deleted")) == 1


def test_a_private_key_gpg_cannot_import_is_a_configuration_error(harness, sim, pgp_keys):
    from mailsec.core.params import ConfigError

    h = harness(users="alice")
    h.account["pgp_private_key"] = pgp_keys[0]  # the public key pasted by mistake
    h.run()
    h.clock.advance(minutes=15)
    with pytest.raises(ConfigError, match="pgp_private_key"):
        h.run()
    h.account["pgp_private_key"] = pgp_keys[1]
    h.run_until_idle()
    assert len(h.messages()) == sim.messages_per_export
    assert h.lifecycle("error") == []
