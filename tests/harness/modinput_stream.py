"""What a modular-input script writes, parsed as splunkd reads it (harness.modinput):
the ``--scheme`` XML, and the ``<stream>`` of events of a run, fed as it arrives."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Optional, Union

STREAM_OPEN = b"<stream>"
STREAM_CLOSE = b"</stream>"


# --------------------------------------------------------------------------- errors


class HarnessError(AssertionError):
    """Base class: a protocol violation by the script (a test failure, not a harness bug)."""


class ProtocolError(HarnessError):
    """The script's output does not follow the splunkd protocol."""


class StreamCorrupt(ProtocolError):
    """stdout of an input is not a well-formed ``<stream>`` (e.g. a stray ``print``)."""

    def __init__(
        self,
        message: str,
        *,
        stdout_raw: bytes = b"",
        stderr: str = "",
        returncode: Optional[int] = None,
    ):
        self.stdout_raw = stdout_raw
        self.stderr = stderr
        self.returncode = returncode
        detail = f"{message}\n  stdout starts: {_excerpt(stdout_raw)}"
        if returncode is not None:
            detail += f"\n  returncode: {returncode}"
        if stderr:
            detail += f"\n  stderr (tail): {_tail(stderr)}"
        super().__init__(detail)


# --------------------------------------------------------------------------- scheme


@dataclass(frozen=True)
class SchemeArg:
    name: str
    title: Optional[str]
    description: Optional[str]
    validation: Optional[str]
    data_type: str
    required_on_edit: bool
    required_on_create: bool


@dataclass(frozen=True)
class Scheme:
    title: str
    description: Optional[str]
    use_external_validation: bool
    use_single_instance: bool
    streaming_mode: str
    arguments: tuple[SchemeArg, ...]
    raw: str = field(repr=False, default="")

    @property
    def arg_names(self) -> list[str]:
        return [a.name for a in self.arguments]

    def arg(self, name: str) -> SchemeArg:
        for a in self.arguments:
            if a.name == name:
                return a
        raise KeyError(f"scheme has no argument {name!r} (has {self.arg_names})")


def _bool_text(elem: Optional[ET.Element], what: str, default: Optional[bool] = None) -> bool:
    if elem is None:
        if default is None:
            raise ProtocolError(f"scheme: missing <{what}>")
        return default
    text = (elem.text or "").strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ProtocolError(f"scheme: <{what}> is {elem.text!r}, expected true/false")


def parse_scheme(xml_text: Union[str, bytes]) -> Scheme:
    """Parse ``--scheme`` output (strict: one ``<scheme>`` document, nothing else)."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ProtocolError(f"--scheme output is not XML ({exc}): {_excerpt(xml_text)}") from exc
    if root.tag != "scheme":
        raise ProtocolError(f"--scheme root element is <{root.tag}>, expected <scheme>")
    title = root.findtext("title")
    if not title:
        raise ProtocolError("scheme: missing <title>")
    args_elem = root.find("endpoint/args")
    if args_elem is None:
        raise ProtocolError("scheme: missing <endpoint><args>")
    arguments = []
    for arg in args_elem:
        if arg.tag != "arg" or not arg.get("name"):
            raise ProtocolError(f"scheme: unexpected <{arg.tag}> in <args> (or arg without name)")
        arguments.append(
            SchemeArg(
                name=arg.get("name", ""),
                title=arg.findtext("title"),
                description=arg.findtext("description"),
                validation=arg.findtext("validation"),
                data_type=(arg.findtext("data_type") or "STRING").upper(),
                required_on_edit=_bool_text(
                    arg.find("required_on_edit"), "required_on_edit", False
                ),
                required_on_create=_bool_text(
                    arg.find("required_on_create"), "required_on_create", False
                ),
            )
        )
    names = [a.name for a in arguments]
    if len(set(names)) != len(names):
        raise ProtocolError(f"scheme: duplicate argument names {names}")
    streaming_mode = (root.findtext("streaming_mode") or "xml").strip().lower()
    if streaming_mode not in ("xml", "simple"):
        raise ProtocolError(f"scheme: streaming_mode {streaming_mode!r}")
    return Scheme(
        title=title,
        description=root.findtext("description"),
        use_external_validation=_bool_text(
            root.find("use_external_validation"), "use_external_validation", False
        ),
        use_single_instance=_bool_text(
            root.find("use_single_instance"), "use_single_instance", False
        ),
        streaming_mode=streaming_mode,
        arguments=tuple(arguments),
        raw=xml_text.decode() if isinstance(xml_text, bytes) else xml_text,
    )


# --------------------------------------------------------------------------- events / stream


@dataclass(frozen=True)
class StreamEvent:
    data: str
    time: Optional[float]
    index: Optional[str]
    sourcetype: Optional[str]
    source: Optional[str]
    host: Optional[str]
    done: bool
    unbroken: bool
    stanza: Optional[str]
    time_raw: Optional[str] = None

    def json(self) -> Any:
        """``json.loads(data)`` (the add-on's events are JSON objects)."""
        try:
            return json.loads(self.data)
        except ValueError as exc:
            raise AssertionError(f"event data is not JSON ({exc}): {self.data[:300]!r}") from exc


_EVENT_CHILDREN = ("time", "source", "sourcetype", "index", "host", "data", "done")


_EVENT_ATTRS = ("stanza", "unbroken")


_EPOCH = re.compile(r"\d{1,12}(?:\.\d*)?\Z")


def _nonblank(text: Optional[str]) -> bool:
    return bool(text)


class StreamParser:
    """Incremental, strict parser of a modular input's stdout.

    Feed bytes as they arrive; ``events`` lists the complete ``<event>`` elements so far.
    Anything splunklib's ``EventWriter`` would not write (text before ``<stream>`` or between
    events, unknown elements or attributes, a non-numeric ``<time>``, bytes after
    ``</stream>``, malformed XML) sets ``error``. ``finish()`` at EOF raises that error or
    reports whether the stream was cut (``truncated``: opened but never closed).
    """

    def __init__(self) -> None:
        self._pull = ET.XMLPullParser(events=("start", "end"))
        self.raw = bytearray()
        self.events: list[StreamEvent] = []
        self.started = False
        self.closed = False
        self.error: Optional[str] = None
        self._depth = 0
        self._root: Optional[ET.Element] = None
        self._prev_event: Optional[ET.Element] = None

    # public -------------------------------------------------------------------
    def feed(self, chunk: bytes) -> int:
        """Feed bytes; returns how many new complete events were parsed."""
        before = len(self.events)
        self.raw += chunk
        if self.error is not None or not chunk:
            return 0
        try:
            self._feed(chunk)
        except _Corrupt as exc:
            self.error = str(exc)
        except ET.ParseError as exc:
            self.error = f"malformed XML on stdout: {exc}"
        return len(self.events) - before

    @property
    def truncated(self) -> bool:
        return bool(self.raw) and not self.closed

    def finish(self) -> bool:
        """Call at EOF. Raises ``_Corrupt`` text via ``error``; returns ``truncated``."""
        if self.error is None and self.raw and not self.started:
            # fewer than 8 bytes, all a prefix of "<stream>"
            return True
        if self.error is None and self.started and not self.closed:
            self._check_cut_tail()
        return self.truncated

    # internals ----------------------------------------------------------------
    def _feed(self, chunk: bytes) -> None:
        if self.closed:
            raise _Corrupt(f"bytes after </stream>: {_excerpt(bytes(chunk))}")
        if not self.started:
            head = bytes(self.raw[: len(STREAM_OPEN)])
            if not STREAM_OPEN.startswith(head):
                raise _Corrupt(
                    "stdout does not start with <stream> (something printed to stdout?): "
                    f"{_excerpt(bytes(self.raw))}"
                )
            if len(self.raw) < len(STREAM_OPEN):
                return
            self.started = True
            chunk = bytes(self.raw)  # the whole buffer is fed at once the first time
        self._pull.feed(chunk)
        for kind, elem in self._pull.read_events():
            if kind == "start":
                self._start(elem)
            else:
                self._end(elem)
        if self.closed and not bytes(self.raw).endswith(STREAM_CLOSE):
            tail = bytes(self.raw)[bytes(self.raw).rfind(STREAM_CLOSE) + len(STREAM_CLOSE) :]
            raise _Corrupt(f"bytes after </stream>: {_excerpt(tail)}")

    def _start(self, elem: ET.Element) -> None:
        self._depth += 1
        if self._depth == 1:
            if elem.tag != "stream":
                raise _Corrupt(f"root element <{elem.tag}>, expected <stream>")
            self._root = elem
        elif self._depth == 2:
            if elem.tag != "event":
                raise _Corrupt(f"<{elem.tag}> inside <stream>, only <event> is allowed")
            self._check_between_events()
        elif self._depth == 3:
            if elem.tag not in _EVENT_CHILDREN:
                raise _Corrupt(f"<{elem.tag}> inside <event> (allowed: {_EVENT_CHILDREN})")
        else:
            raise _Corrupt(f"nested <{elem.tag}> inside an event field")

    def _end(self, elem: ET.Element) -> None:
        self._depth -= 1
        if self._depth == 1:  # </event>
            self.events.append(self._to_event(elem))
            self._prev_event = elem
        elif self._depth == 0:  # </stream>
            self._check_between_events()
            self.closed = True

    def _check_between_events(self) -> None:
        root = self._root
        assert root is not None
        if self._prev_event is None:
            if _nonblank(root.text):
                raise _Corrupt(f"text inside <stream> before the first event: {root.text!r}")
        else:
            if _nonblank(self._prev_event.tail):
                raise _Corrupt(f"text between events on stdout: {self._prev_event.tail!r}")
            root.remove(self._prev_event)  # keep memory flat on long runs

    def _check_cut_tail(self) -> None:
        raw = bytes(self.raw)
        end = raw.rfind(b"</event>")
        rest = raw[end + len(b"</event>") :] if end >= 0 else raw[len(STREAM_OPEN) :]
        if rest and not (
            rest.startswith(b"<event")
            or b"<event".startswith(rest)
            or STREAM_CLOSE.startswith(rest)
        ):
            self.error = f"stream cut after non-event bytes: {_excerpt(rest)}"

    def _to_event(self, elem: ET.Element) -> StreamEvent:
        for attr in elem.attrib:
            if attr not in _EVENT_ATTRS:
                raise _Corrupt(f"unexpected attribute {attr!r} on <event>")
        unbroken = elem.get("unbroken", "0")
        if unbroken not in ("0", "1"):
            raise _Corrupt(f"<event unbroken={unbroken!r}>, expected 0 or 1")
        if _nonblank(elem.text):
            raise _Corrupt(f"text directly inside <event>: {elem.text!r}")
        fields: dict[str, Optional[str]] = {}
        for child in elem:
            if child.tag in fields:
                raise _Corrupt(f"<{child.tag}> twice in one <event>")
            if _nonblank(child.tail):
                raise _Corrupt(f"text inside <event> after <{child.tag}>: {child.tail!r}")
            fields[child.tag] = child.text
        if "data" not in fields:
            raise _Corrupt("<event> without <data>")
        if fields.get("done"):
            raise _Corrupt(f"<done> with content {fields['done']!r}")
        time_raw = fields.get("time")
        when: Optional[float] = None
        if "time" in fields:
            if not _EPOCH.match(time_raw or ""):
                raise _Corrupt(
                    f"<time>{time_raw}</time> is not epoch seconds (splunkd wants e.g. "
                    "1700000000.123; a datetime's str() is a bug)"
                )
            when = float(time_raw or "")
        return StreamEvent(
            data=fields["data"] or "",
            time=when,
            index=fields.get("index"),
            sourcetype=fields.get("sourcetype"),
            source=fields.get("source"),
            host=fields.get("host"),
            done="done" in fields,
            unbroken=unbroken == "1",
            stanza=elem.get("stanza"),
            time_raw=time_raw,
        )


class _Corrupt(Exception):
    pass


def parse_stream(stdout: bytes) -> tuple[list[StreamEvent], bool]:
    """Parse a complete stdout capture. Returns ``(events, truncated)``.

    Raises ``StreamCorrupt`` if stdout is not a well-formed stream (a cut stream is fine:
    it parses up to the last complete event and ``truncated`` is True). Empty stdout is a
    valid run that wrote no event.
    """
    parser = StreamParser()
    parser.feed(stdout)
    truncated = parser.finish()
    if parser.error:
        raise StreamCorrupt(parser.error, stdout_raw=stdout)
    return list(parser.events), truncated


# --------------------------------------------------------------------------- helpers


def _excerpt(data: Union[bytes, bytearray, str], limit: int = 200) -> str:
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8", "replace")
    return repr(data[:limit]) + ("..." if len(data) > limit else "")


def _tail(text: Union[str, bytes], limit: int = 1500) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text if len(text) <= limit else "..." + text[-limit:]
