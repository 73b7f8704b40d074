"""Glue between splunklib's modular-input objects and the services.

A UCC input helper module calls `validate(...)` and `run_inputs(...)`; everything
splunkd-specific (metadata, settings, secrets, KV store, EventWriter, logging,
stop signals) is set up here so that the service gets a plain `InputRun`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Callable, Optional

from solnlib import log
from splunklib import modularinput as smi

from mailsec import APP_NAME
from mailsec.adapters import config
from mailsec.adapters import settings as names
from mailsec.adapters.kvstore import KVStoreCheckpointStore, checkpoint_collection
from mailsec.adapters.logs import input_logger
from mailsec.adapters.secret_cache import StoragePasswordsCache
from mailsec.adapters.splunkd import Splunkd
from mailsec.core.events import Event, has_xml_unsafe, xml_safe_json
from mailsec.core.params import ConfigError
from mailsec.core.runtime import InputRun


class SplunkEventSink:
    """Writes events to splunkd's stream; `write` returns once they are flushed."""

    def __init__(
        self,
        writer: smi.EventWriter,
        logger: logging.Logger,
        full_name: str,
        default_index: Optional[str],
        account: Optional[str] = None,
    ) -> None:
        self._writer = writer
        self._logger = logger
        self._full_name = full_name
        self._default_index = default_index
        self._account = account
        self.total = 0

    def write(self, events: Iterable[Event]) -> int:
        # One string and one flush per batch, byte for byte what splunklib's
        # Event.write_to makes per event (ElementTree per event costs ~50 us: a
        # 300-bot Sense report took 17 ms to write that way).
        per_target: Counter = Counter()
        parts = []
        for head, target, texts in self._runs(events):
            parts.append(_run_stream(head, texts))
            per_target[target] += len(texts)
        if parts:
            out = self._writer._out
            if not self._writer.header_written:
                out.write("<stream>")
                self._writer.header_written = True
            stream = "".join(parts)
            if not stream.isascii():
                # as ElementTree's default us-ascii: non-ASCII as character references,
                # whatever encoding splunkd's pipe was opened with
                stream = stream.encode("ascii", "xmlcharrefreplace").decode("ascii")
            out.write(stream)
            # "written and flushed" before the checkpoint that follows
            out.flush()
        written = 0
        for (sourcetype, index), count in per_target.items():
            log.events_ingested(
                self._logger, self._full_name, sourcetype, count, index or "default",
                account=self._account,
            )  # fmt: skip
            written += count
        self.total += written
        return written

    def _runs(self, events: Iterable[Event]) -> list:
        """Consecutive events sharing what precedes <data> (time and target; the 300
        bots of a Sense report share both), as (head, (sourcetype, index), JSON texts)."""
        runs: list = []
        shared = None
        texts: list = []
        for event in events:
            key = (event.time, event.sourcetype, event.index, event.source, event.host)
            if key != shared:
                shared = key
                index = event.index or self._default_index
                source = event.source or self._full_name
                head = (
                    f'<event unbroken="1"><time>{event.time:.3f}</time>'
                    f"{_event_head(event.sourcetype, index, source, event.host)}<data>"
                )
                texts = []
                runs.append((head, (event.sourcetype, index), texts))
            texts.append(event.json_text())
        return runs


_EVENT_END = "</data><done /></event>"


def _run_stream(head: str, texts: list) -> str:
    """The stream of events sharing `head`, escaped in one pass over all of them.

    Compact JSON texts hold no raw newline (json escapes control characters), so
    "\n" separates them through the XML-safety check and the escaping, and is then
    replaced by the markup between two events.
    """
    joined = "\n".join(texts)
    if has_xml_unsafe(joined):  # rare: only events holding such characters change
        joined = "\n".join(map(xml_safe_json, texts))
    return head + _xml_text(joined).replace("\n", _EVENT_END + head) + _EVENT_END


def _xml_text(text: str) -> str:
    """What ElementTree escapes in element text. A report's stream is ~140 KB with
    none of these, nearly always: `in` finds a character at memory speed, where
    `replace` first counts them one character at a time (~50 us a call)."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def _event_head(
    sourcetype: Optional[str], index: Optional[str], source: Optional[str], host: Optional[str]
) -> str:
    """splunklib's elements between <time> and <data>, in its order."""
    return "".join(
        f"<{tag}>{_xml_text(value)}</{tag}>"
        for tag, value in (
            ("source", source),
            ("sourcetype", sourcetype),
            ("index", index),
            ("host", host),
        )
        if value is not None
    )


def install_stop_triggers(stop: threading.Event, poll_seconds: float = 2.0) -> None:
    """Set `stop` on SIGTERM/SIGINT, or when the parent splunkd process goes away.

    splunklib reads stdin to its end before stream_events, so a closed stdin cannot
    tell us splunkd stopped; a change of parent process can.
    """

    def on_signal(signum, _frame) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parent = os.getppid()

    def watch_parent() -> None:
        while not stop.wait(poll_seconds):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()


def validate(definition: smi.ValidationDefinition, parse: Callable[[Mapping], object]) -> None:
    """Run a service's parameter parser; splunklib shows the error text to the user."""
    try:
        parse(definition.parameters)
    except ConfigError as error:
        raise ValueError(str(error)) from None


def shared_state_dir() -> Optional[str]:
    """$SPLUNK_HOME/var/run/splunk/TA_mailsec: state the add-on's processes on this
    host share (the per-account rate limits, docs/ser_report.md). It matters for a
    minute at most: losing it costs nothing."""
    home = os.environ.get("SPLUNK_HOME")
    return os.path.join(home, "var", "run", "splunk", APP_NAME) if home else None


def run_inputs(
    input_type: str,
    inputs: smi.InputDefinition,
    writer: smi.EventWriter,
    service: Callable[[InputRun], None],
    *,
    account_field: str = "account",
) -> None:
    splunkd = Splunkd(inputs.metadata["server_uri"], inputs.metadata["session_key"])
    stop = threading.Event()
    install_stop_triggers(stop)
    settings = config.load_settings(splunkd)
    level = names.log_level_from_settings(settings)
    for stanza, params in inputs.inputs.items():
        name = stanza.split("://", 1)[-1]
        logger = input_logger(input_type, name, level)
        log.modular_input_start(logger, name)
        try:
            run = InputRun(
                input_type=input_type,
                name=name,
                params=params,
                logger=logger,
                sink=SplunkEventSink(
                    writer, logger, stanza, params.get("index"), params.get(account_field)
                ),
                checkpoints=KVStoreCheckpointStore(splunkd, checkpoint_collection(input_type)),
                load_account=lambda tab, account: config.load_account(splunkd, tab, account),
                open_store=lambda collection: KVStoreCheckpointStore(splunkd, collection),
                input_secrets=lambda name=name: config.load_input_secrets(
                    splunkd, input_type, name
                ),
                proxy=config.proxy_from_settings(settings),
                secret_cache=StoragePasswordsCache(splunkd, owner=f"{input_type}.{name}"),
                stop=stop,
                index=params.get("index"),
                host=params.get("host"),
                shared_state_dir=shared_state_dir(),
            )
            service(run)
            # the health dashboard's "last successful run" reads this line
            log.log_event(logger, {"action": "run_succeeded", "modular_input_name": stanza})
        except ConfigError as error:
            logger.error("Configuration error in %s: %s", stanza, error)
        except Exception as error:
            log.log_exception(logger, error, "IngestionError", msg_before=f"{stanza} failed: ")
        finally:
            log.modular_input_end(logger, name)
        if stop.is_set():
            break
