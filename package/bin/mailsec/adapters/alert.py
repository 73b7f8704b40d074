"""What a custom alert action needs from the Splunk host besides splunkd's REST API:
where SPLUNK_HOME is, the `<action>_modalert.log`, and the spool folder through
which an alert action indexes its own events.

Plain `logging` with solnlib's file layout and line format, so that the log lands
where UCC's alert actions put theirs without importing solnlib (and requests) in a
process started for every mail.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional

from mailsec.core.events import Event

LOG_FORMAT = (  # solnlib.log's format
    "%(asctime)s log_level=%(levelname)s pid=%(process)d tid=%(threadName)s "
    "file=%(filename)s:%(funcName)s:%(lineno)d | %(message)s"
)
STASH_EXTENSION = ".stash_new"
_HEADER_UNSAFE = re.compile(r"[^\w.:/@-]")


def splunk_home(script_path: Optional[str] = None) -> Path:
    """$SPLUNK_HOME as splunkd sets it, else the one the script is installed under."""
    configured = os.environ.get("SPLUNK_HOME")
    if configured:
        return Path(configured)
    if script_path:
        # <home>/etc/apps/<app>/bin/<script>
        return Path(script_path).resolve().parents[4]
    raise RuntimeError("SPLUNK_HOME is not set")


def modalert_logger(action: str, home: Path, level: str = "INFO") -> logging.Logger:
    logger = logging.getLogger(f"{action}_modalert")
    logger.setLevel(level)
    logger.propagate = False
    if not logger.handlers:
        folder = home / "var" / "log" / "splunk"
        folder.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            folder / f"{action}_modalert.log", maxBytes=25_000_000, backupCount=5
        )
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
    return logger


def _header_value(value: str) -> str:
    return _HEADER_UNSAFE.sub("_", value)


def write_stash(home: Path, event: Event, default_index: str = "main") -> Path:
    """Hand one event to splunkd for indexing, as splunktaucclib's cim_actions does.

    splunkd indexes every `*.stash_new` file of var/spool/splunk (its header line
    names index, source and sourcetype) and deletes it. The file is written under
    another name first and renamed, so splunkd never reads half an event.
    """
    spool = home / "var" / "spool" / "splunk"
    spool.mkdir(parents=True, exist_ok=True)
    header = "***SPLUNK*** index={} sourcetype={} source={}".format(
        _header_value(event.index or default_index),
        _header_value(event.sourcetype),
        _header_value(event.source or "rm_send_mail"),
    )
    if event.host:
        header += f" host={_header_value(event.host)}"
    content = (header + "\n" + event.to_json() + "\n").encode("utf-8")
    name = f"{int(time.time())}_{uuid.uuid4().hex}_{_header_value(event.sourcetype)}"
    fd, temporary = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=spool.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        final = spool / (name.replace(":", "_") + STASH_EXTENSION)
        os.replace(temporary, final)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return final
