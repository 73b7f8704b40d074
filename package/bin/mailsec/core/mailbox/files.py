"""One export file's messages, from any byte stream to written events, resumable.

Shared by the mailbox watchers: audit_export feeds gpg's plaintext, vault_export the
mbox bytes streamed out of a zip member. Neither ever writes mail to disk here.

The resume state of a file is a plain dict kept in the watcher's checkpoint (in
the request record, under a key of the watcher's choosing):

    {"written": n,        # messages of the file durable in Splunk (resume after them)
     "attempts": n,       # failed attempts counted against MAX attempts
     "truncated": k,      # ordinal of a cut-off last message, once seen
     "parse_errors": n,   # messages indexed with parse_error
     "done": True,        # every message written and reported: never read again
     "failed": True,      # given up for good (the export is kept for inspection)
     "messages": n, "plaintext_bytes": n}   # set with `done`

`FileIndexer.index` runs the pipeline and, after each batch of events written,
records `written` and saves the checkpoint (through the caller's `save`), then
checks the stop flag: a restart goes on after the last message written, and a
replayed message carries the same `event_id` (docs/audit_export.md, "Contract").
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Callable, Optional

from mailsec.core.events import Event, build_event
from mailsec.core.mailbox import pipeline
from mailsec.core.mailbox.lifecycle import Lifecycle
from mailsec.core.mailbox.message import ParsedMessage
from mailsec.core.mailbox.pipeline import Emitter, run_pipeline

MESSAGE_SOURCETYPE = "google:workspace:mailbox:message"


def new_entry() -> dict:
    return {"written": 0, "attempts": 0}


def settled(entry: dict) -> bool:
    """Done or given up: not read again."""
    return bool(entry.get("done") or entry.get("failed"))


class FileIndexer:
    """Indexes the files of one watcher run and reports them as lifecycle events.

    `save()` saves the checkpoint (holding the file entries); `check_stop()` raises
    `Stopped` when the input must stop; `log_prefix` starts the progress log lines
    (`<prefix>_progress`, `<prefix>_parse_error`), which the health dashboard reads.
    `batch_messages` (tests) writes smaller batches than the pipeline's default.
    """

    def __init__(
        self,
        lifecycle: Lifecycle,
        save: Callable[[], None],
        check_stop: Callable[[], None],
        log: logging.Logger,
        log_prefix: str,
        include_body: bool,
        body_max_bytes: int,
        max_attempts: int,
        batch_messages: Optional[int] = None,
    ) -> None:
        self.lifecycle = lifecycle
        self._save = save
        self._check_stop = check_stop
        self.log = log
        self._prefix = log_prefix
        self._include_body = include_body
        self._body_max = body_max_bytes
        self.max_attempts = max_attempts
        self._batch_messages = batch_messages  # None: the pipeline's BATCH_MESSAGES

    def index(
        self,
        request: dict,
        file_index: Any,
        entry: dict,
        chunks: Iterable[bytes],
        export_time: datetime,
        done_action: str,
    ) -> None:
        """Split, parse and write the messages of `chunks` (an mbox, any chunk sizes),
        skipping the `entry["written"]` first ones; then the `done_action` event (and
        an `error` event for a cut-off last message), and the entry is done.

        `export_time` is the `_time` of a message without a readable Date. Whatever
        `chunks` raises propagates after the messages it completed were written (the
        caller reports it through `error`); so does `NotAnMbox`, when the stream does
        not begin with a `From ` line.
        """
        events = MessageEvents(request, file_index, export_time, self.lifecycle, entry, self)

        def write(batch: list, durable: int) -> None:
            self.lifecycle.sink.write(batch)
            entry["written"] = durable
            if emitter.truncated is not None:  # a resumed run skips that message
                entry["truncated"] = emitter.truncated
            self._save()
            self.log.info(
                "%s_progress request_id=%s file=%s messages=%d",
                self._prefix,
                request["id"],
                file_index,
                durable,
            )
            self._check_stop()

        emitter = Emitter(
            events,
            write,
            skip=entry.get("written", 0),
            include_body=self._include_body,
            body_max_bytes=self._body_max,
            batch_messages=self._batch_messages or pipeline.BATCH_MESSAGES,
        )
        splitter = run_pipeline(chunks, emitter)
        lifecycle = self.lifecycle
        lifecycle.emit(
            lifecycle.event(
                done_action,
                request,
                file_index,
                file_index=file_index,
                messages=emitter.messages,
                bytes=splitter.bytes,
                parse_errors=entry.get("parse_errors", 0),
            )
        )
        truncated = entry.get("truncated") if emitter.truncated is None else emitter.truncated
        if truncated is not None:
            lifecycle.emit(
                lifecycle.event(
                    "error",
                    request,
                    ("truncated", file_index),
                    file_index=file_index,
                    messages=emitter.messages,
                    error=f"the mbox of file {file_index} ends inside message {truncated}: "
                    "it was indexed with truncated=true",
                )
            )
        # the file is done only once the events reporting it are written (at-least-once)
        entry["done"] = True
        entry["messages"] = emitter.messages
        entry["plaintext_bytes"] = splitter.bytes
        self._save()

    def error(
        self,
        request: dict,
        file_index: Any,
        entry: dict,
        error: str,
        permanent: bool = False,
        counted: bool = False,
    ) -> None:
        """A file that could not be read this time: an `error` event, then the entry
        saved. `counted` failures are the file's own (corrupt, not an mbox): after
        `max_attempts` of them it is given up (`failed`). Others (the network, a
        wrong key) are tried again on every run."""
        if counted:
            entry["attempts"] = entry.get("attempts", 0) + 1
            if entry["attempts"] >= self.max_attempts:
                permanent = True
        if permanent:
            entry["failed"] = True
            error += f" (given up after {entry.get('attempts', 0)} attempts; the export is kept)"
        lifecycle = self.lifecycle
        lifecycle.emit(
            lifecycle.event(
                "error",
                request,
                ("file", file_index, entry.get("attempts", 0), error[:40]),
                file_index=file_index,
                messages=entry.get("written", 0),
                error=error,
            )
        )
        self._save()  # after the event: a crash in between repeats the attempt
        self.log.error("request_id=%s file=%s: %s", request["id"], file_index, error)

    def parse_error(self, request: dict, file_index: Any, ordinal: int, error: str) -> None:
        self.log.warning(
            "%s_parse_error request_id=%s file=%s ordinal=%d error=%s",
            self._prefix,
            request["id"],
            file_index,
            ordinal,
            error,
        )


class MessageEvents:
    """The emitter's `make_event` for one file: a parsed message → its event.

    The event holds the fields that place it (`request_id`, `user`, `domain`,
    `file_index`, `api`, `ordinal`), then the message's own fields. Its natural key is
    (request id, file index, ordinal, Message-ID), so a replay has the same
    `event_id`. A message that cannot be turned into an event is still indexed, with
    `parse_error` and the headers that can be read, and counted in the entry.
    """

    def __init__(
        self,
        request: dict,
        file_index: Any,
        export_time: datetime,
        lifecycle: Lifecycle,
        entry: dict,
        files: FileIndexer,
    ) -> None:
        self._request = request
        self._file_index = file_index
        self._export_time = export_time
        self._lifecycle = lifecycle
        self._entry = entry
        self._files = files

    def _where(self, ordinal: int) -> dict:
        return {
            "request_id": self._request["id"],
            "user": self._request["user"],
            "domain": self._lifecycle.domain,
            "file_index": self._file_index,
            "api": self._lifecycle.api,
            "ordinal": ordinal,
        }

    def _build(self, when: datetime, data: dict, message_id: str, ordinal: int) -> Event:
        key = [self._request["id"], self._file_index, ordinal, message_id]
        return build_event(MESSAGE_SOURCETYPE, when, data, key, index=self._lifecycle.index)

    def __call__(self, ordinal: int, parsed: ParsedMessage) -> Event:
        error_class = parsed.parse_error
        if not error_class:
            try:
                fields = parsed.fields()
                data = self._where(ordinal)
                data.update(fields)
                when = parsed.date() or self._export_time
                return self._build(when, data, fields["message_id"], ordinal)
            except Exception as error:  # one message never stops the file
                error_class = type(error).__name__
        self._entry["parse_errors"] = self._entry.get("parse_errors", 0) + 1
        self._files.parse_error(self._request, self._file_index, ordinal, error_class)
        data = self._where(ordinal)
        data.update(size=parsed.size, parse_error=error_class)
        data.update(readable_fields(parsed))
        return self._build(self._export_time, data, data.get("message_id", ""), ordinal)


def readable_fields(parsed: ParsedMessage) -> dict:
    """The header fields of a message that failed, each one that can still be read."""
    out = {}
    for name, header in (
        ("message_id", "Message-ID"),
        ("from", "From"),
        ("to", "To"),
        ("subject", "Subject"),
        ("date", "Date"),
    ):
        with contextlib.suppress(Exception):  # this one is unreadable too: left out
            out[name] = parsed.header(header)
    return out
