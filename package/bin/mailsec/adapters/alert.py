"""What a custom alert action needs from the Splunk host besides splunkd's REST API:
where SPLUNK_HOME is, the `<action>_modalert.log`, and the spool folder through
which an alert action indexes its own events.

Standard library only, and not even `logging`: an alert action is a new process
for every mail, and `logging` (with `logging.handlers`, `tempfile`, `uuid`) costs
more start-up time than a whole curl run. ModalertLog writes solnlib's line format
into the file UCC's alert actions write, rotated as RotatingFileHandler does.
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Optional

from mailsec.core.events import Event

STASH_EXTENSION = ".stash_new"
LOG_MAX_BYTES = 25_000_000
LOG_BACKUPS = 5
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_HEADER_UNSAFE = re.compile(r"[^\w.:/@-]")


def splunk_home(script_path: Optional[str] = None) -> str:
    """$SPLUNK_HOME as splunkd sets it, else the one the script is installed under."""
    configured = os.environ.get("SPLUNK_HOME")
    if configured:
        return configured
    if script_path:
        # <home>/etc/apps/<app>/bin/<script>
        path = os.path.realpath(script_path)
        for _ in range(5):
            path = os.path.dirname(path)
        return path
    raise RuntimeError("SPLUNK_HOME is not set")


class ModalertLog:
    """The `logging.Logger` calls the action makes (debug, info, warning, error,
    exception, setLevel), each line in solnlib.log's format:
    `<asctime> log_level=<LEVEL> pid=<pid> tid=<thread> file=<file>:<func>:<line> | <message>`.
    The file is opened for each line: several alert processes may write it."""

    def __init__(self, path: str, level: str = "INFO") -> None:
        self.path = path
        self.level = LEVELS["INFO"]
        self.setLevel(level)

    def setLevel(self, level: str) -> None:
        self.level = LEVELS.get(str(level).upper(), LEVELS["INFO"])

    def debug(self, message: str, *args) -> None:
        self._log("DEBUG", message, args)

    def info(self, message: str, *args) -> None:
        self._log("INFO", message, args)

    def warning(self, message: str, *args) -> None:
        self._log("WARNING", message, args)

    def error(self, message: str, *args) -> None:
        self._log("ERROR", message, args)

    def exception(self, message: str, *args) -> None:
        self._log("ERROR", message, args, with_traceback=True)

    def _log(self, level: str, message: str, args: tuple, with_traceback: bool = False) -> None:
        if LEVELS[level] < self.level:
            return
        try:
            text = message % args if args else message
        except (TypeError, ValueError):
            text = f"{message} {args!r}"
        if with_traceback:
            import traceback  # only for an internal error

            text += "\n" + traceback.format_exc().rstrip("\n")
        caller = sys._getframe(2)
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        threading = sys.modules.get("threading")
        thread = threading.current_thread().name if threading else "MainThread"
        line = (
            f"{stamp},{int(now * 1000) % 1000:03d} log_level={level} pid={os.getpid()} "
            f"tid={thread} file={os.path.basename(caller.f_code.co_filename)}:"
            f"{caller.f_code.co_name}:{caller.f_lineno} | {text}\n"
        )
        try:
            self._write(line.encode("utf-8"))
        except OSError as error:  # as logging: a log that cannot be written is no crash
            sys.stderr.write(f"ERROR cannot write {self.path}: {error}\n{line}")

    def _write(self, data: bytes) -> None:
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(data) > LOG_MAX_BYTES:
            self._rotate()
        with open(self.path, "ab") as handle:
            handle.write(data)

    def _rotate(self) -> None:
        """As RotatingFileHandler.doRollover: .4 -> .5, ..., the log -> .1."""
        for index in range(LOG_BACKUPS - 1, 0, -1):
            older = f"{self.path}.{index}"
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{index + 1}")
        if os.path.exists(self.path):
            os.replace(self.path, f"{self.path}.1")


def modalert_logger(action: str, home: str, level: str = "INFO") -> ModalertLog:
    folder = os.path.join(home, "var", "log", "splunk")
    os.makedirs(folder, exist_ok=True)
    return ModalertLog(os.path.join(folder, f"{action}_modalert.log"), level)


def _header_value(value: str) -> str:
    return _HEADER_UNSAFE.sub("_", value)


def write_stash(home: str, event: Event, default_index: str = "main") -> str:
    """Hand one event to splunkd for indexing, as splunktaucclib's cim_actions does.

    splunkd indexes every `*.stash_new` file of var/spool/splunk (its header line
    names index, source and sourcetype) and deletes it. The file is written under
    another name first and renamed, so splunkd never reads half an event. It is not
    fsynced, as cim_actions does not: splunkd reads it from the page cache within
    seconds, and on a busy disk an fsync costs more than the whole mail.
    """
    spool = os.path.join(home, "var", "spool", "splunk")
    os.makedirs(spool, exist_ok=True)
    header = "***SPLUNK*** index={} sourcetype={} source={}".format(
        _header_value(event.index or default_index),
        _header_value(event.sourcetype),
        _header_value(event.source or "rm_send_mail"),
    )
    if event.host:
        header += f" host={_header_value(event.host)}"
    content = (header + "\n" + event.to_json() + "\n").encode("utf-8")
    name = f"{int(time.time())}_{os.urandom(16).hex()}_{_header_value(event.sourcetype)}"
    name = name.replace(":", "_")
    temporary = os.path.join(os.path.dirname(spool), f".{name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        final = os.path.join(spool, name + STASH_EXTENSION)
        os.replace(temporary, final)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return final


class SplunkHomeOutput:
    """`mailsec.core.alert.AlertOutput` under $SPLUNK_HOME: the action's modalert log,
    and splunkd's spool folder for its events."""

    def __init__(self, home: str) -> None:
        self.home = home

    def log(self, action: str) -> ModalertLog:
        return modalert_logger(action, self.home)

    def write_event(self, event: Event, default_index: str = "main") -> str:
        return write_stash(self.home, event, default_index)
