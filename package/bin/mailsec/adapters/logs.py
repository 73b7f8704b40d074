"""Loggers writing to $SPLUNK_HOME/var/log/splunk/ through solnlib."""

from __future__ import annotations

import logging
import os
import re

from solnlib import log


def _point_solnlib_at_splunk_home() -> None:
    # solnlib 7 finds $SPLUNK_HOME/var/log/splunk through Splunk's own Python
    # package; naming the directory works inside and outside splunkd alike.
    home = os.environ.get("SPLUNK_HOME")
    if home:
        log.Logs.set_context(directory=os.path.join(home, "var", "log", "splunk"))


_point_solnlib_at_splunk_home()


def logger_name(input_type: str, input_name: str) -> str:
    # One file per input stanza: each stanza runs in its own process, and several
    # processes rotating one file would lose lines.
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", input_name)
    return f"ta_mailsec_{input_type}_{safe}"


def input_logger(input_type: str, input_name: str, level: str = "INFO") -> logging.Logger:
    logger = log.Logs().get_logger(logger_name(input_type, input_name))
    logger.setLevel(level)
    return logger
