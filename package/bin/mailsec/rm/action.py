"""The `rm_send_mail` alert action: one payload from splunkd, one mail, one outcome.

Every run ends with exactly one outcome: an `rm:mail:send` event written into the
action's `result_index`, the same line in rm_send_mail_modalert.log, and an exit
status (0 on DONE). Requests RM would refuse are refused here with RM's code,
before any network call.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from mailsec.adapters.alert import modalert_logger, write_stash
from mailsec.core.events import build_event
from mailsec.core.params import ConfigError
from mailsec.rm import codes, render, validate
from mailsec.rm.config import RmAccount, RmActionConfig

ACTION = "rm_send_mail"
SOURCETYPE = "rm:mail:send"
ACCOUNT_TAB = "rm_account"
TIMINGS_ENV = "TA_MAILSEC_RM_TIMINGS"  # "1": print the phase timings to stderr as JSON

EXIT_DONE = 0
EXIT_NOT_SENT = 2  # refused locally: RM was never called
EXIT_REFUSED = 3  # RM answered with a code other than DONE
EXIT_FAILED = 4  # transport failure, unknown code, or an internal error


@dataclass
class Runtime:
    """What a run takes from its surroundings; tests replace parts of it."""

    splunk_home: Path
    load_account: Optional[Callable[[str, str], dict]] = None  # (tab, name) -> fields
    load_settings: Optional[Callable[[], dict]] = None
    sleep: Callable[[float], None] = time.sleep
    rng: Callable[[], float] = random.random
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    timings: dict = field(default_factory=dict)


@dataclass
class Outcome:
    code: str
    detail: Optional[str] = None
    attempts: int = 0
    latency_ms: Optional[int] = None
    http_status: Optional[int] = None
    sent: bool = False
    extra: dict = field(default_factory=dict)


def exit_status(outcome: Outcome) -> int:
    if outcome.code == codes.DONE:
        return EXIT_DONE
    if not outcome.sent and codes.describe(outcome.code).range in ("validation", "configuration"):
        return EXIT_NOT_SENT
    if outcome.code in codes.RM_CODES:
        return EXIT_REFUSED
    return EXIT_FAILED


class _Phases:
    def __init__(self, clock: Callable[[], float], into: dict) -> None:
        self._clock = clock
        self._into = into
        self._last = clock()

    def mark(self, name: str) -> None:
        now = self._clock()
        self._into[name] = self._into.get(name, 0) + round((now - self._last) * 1000)
        self._last = now


def run(payload: Mapping[str, Any], runtime: Runtime) -> int:
    """Send the mail a payload describes and record the outcome; return the exit status."""
    logger = modalert_logger(ACTION, runtime.splunk_home)
    configuration = payload.get("configuration") or {}
    context = {
        "search_name": payload.get("search_name") or "",
        "sid": payload.get("sid") or "",
        "account": configuration.get("account") or "",
        "result_index": (configuration.get("result_index") or "main").strip() or "main",
    }
    try:
        outcome = _send(payload, configuration, context, runtime, logger)
    except Exception as error:  # the outcome event must be written whatever failed
        logger.exception("unexpected error sending the mail")
        outcome = Outcome("INTERNAL_ERROR", detail=f"{type(error).__name__}: {error}")
    return _record(outcome, context, runtime, logger)


def _send(payload, configuration, context, runtime: Runtime, logger) -> Outcome:
    phases = _Phases(runtime.clock, runtime.timings)
    try:
        config = RmActionConfig.from_params(configuration)
    except ConfigError as error:
        return Outcome("INVALID_PARAMETER", detail=str(error))
    context["result_index"] = config.result_index
    recipients = validate.normalise_recipients(config.to)
    context["recipients"] = recipients
    if recipients.changed:
        logger.warning(
            "recipients were trimmed or lower-cased, as Release Manager requires: to=%r became %s",
            config.to,
            ",".join(recipients.addresses),
        )
    text, html = config.text, config.html
    rows = None
    if config.include_results == "table":
        table = render.read_results(payload.get("results_file"), config.max_rows)
        if table is not None:
            text, html = render.append_table(text, html, table)
            rows = len(table.rows)
    context["result_rows"] = rows
    code = validate.violation(recipients.addresses, config.subject, text, html)
    if code is not None:
        phases.mark("configuration_ms")
        return Outcome(code, detail="refused before sending: Release Manager was not called")

    try:
        fields = runtime.load_account(ACCOUNT_TAB, config.account)
        account = RmAccount.from_fields(fields)
        settings = runtime.load_settings() if runtime.load_settings else {}
        logger.setLevel(_log_level(settings))
        proxy = _proxy(settings)
    except ConfigError as error:
        return Outcome("ACCOUNT_INVALID", detail=str(error))
    except Exception as error:  # splunkd unreachable or refusing the session key
        logger.error("cannot read account %r from splunkd: %s", config.account, error)
        return Outcome("ACCOUNT_INVALID", detail=f"cannot read the account: {error}")
    context.update(rm_host=account.hostname, whitelist_name=account.whitelist_name)
    phases.mark("configuration_ms")

    from mailsec.rm import pkcs12  # cryptography: only when a mail is to be sent

    try:
        certificate = pkcs12.open_pkcs12(
            account.client_certificate, account.certificate_password, runtime.now()
        )
    except pkcs12.CertificateError as error:
        return Outcome(error.code, detail=str(error))
    context.update(certificate_subject=certificate.subject, sender=certificate.email)

    from mailsec.rm import client

    with pkcs12.client_cert_files(certificate) as (chain_path, key_path):
        try:
            ssl_context = client.make_ssl_context(account.ca_bundle, chain_path, key_path)
        except (ValueError, OSError) as error:  # ssl.SSLError is an OSError
            return Outcome("ACCOUNT_INVALID", detail=f"ca_bundle or certificate: {error}")
    phases.mark("certificate_ms")

    rm = client.RmClient(
        account.hostname,
        ssl_context,
        proxy=proxy,
        connect_timeout=runtime.connect_timeout,
        read_timeout=runtime.read_timeout,
        sleep=runtime.sleep,
        rng=runtime.rng,
        clock=runtime.clock,
        log=logger.warning,
    )
    mail = {
        "subject": config.subject or "",
        "text": text or "",
        "html": html or "",
        "important": config.important,
        "toAddresses": list(recipients.addresses),
    }
    result = rm.send(account.whitelist_name, mail)
    for name, value in result.phases.items():
        runtime.timings[name] = value
    phases.mark("send_ms")
    return Outcome(
        result.code,
        detail=result.detail,
        attempts=result.attempts,
        latency_ms=result.latency_ms,
        http_status=result.http_status,
        sent=result.sent,
    )


def _log_level(settings: dict) -> str:
    level = str((settings.get("logging") or {}).get("loglevel") or "INFO").upper()
    return level if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "INFO"


def _proxy(settings: dict):
    stanza = settings.get("proxy") or {}
    if str(stanza.get("proxy_enabled") or "0").lower() not in {"1", "true"}:
        return None
    host, port = stanza.get("proxy_url"), stanza.get("proxy_port")
    if not host or not port:
        raise ConfigError("proxy_url", "the proxy is enabled but its host or port is empty")
    if (stanza.get("proxy_type") or "http") != "http":
        raise ConfigError("proxy_type", "Release Manager mail goes through an HTTP proxy only")
    from mailsec.rm.client import Proxy

    return Proxy(host, int(port), stanza.get("proxy_username"), stanza.get("proxy_password"))


def _record(outcome: Outcome, context: dict, runtime: Runtime, logger: logging.Logger) -> int:
    info = codes.describe(outcome.code)
    recipients = context.get("recipients")
    fields = {
        "search_name": context["search_name"],
        "sid": context["sid"],
        "account": context["account"],
        "code": info.code,
        "range": info.range,
        "explanation": info.explanation,
        "action_to_take": info.action_to_take,
        "recipient_count": len(recipients.addresses) if recipients else 0,
        "recipient_domains": recipients.domains if recipients else [],
        "latency_ms": outcome.latency_ms,
        "attempts": outcome.attempts,
        "sent": outcome.sent,
        "http_status": outcome.http_status,
        "detail": outcome.detail,
    }
    for key in ("rm_host", "whitelist_name", "sender", "certificate_subject", "result_rows"):
        if context.get(key) is not None:
            fields[key] = context[key]
    when = runtime.now()
    # one event per run: the run's time is the revision
    natural_key = [context["search_name"], context["sid"], context["account"]]
    event = build_event(
        SOURCETYPE,
        when,
        fields,
        natural_key,
        revision=when.isoformat(),
        index=context["result_index"],
        source=ACTION,
    )
    status = exit_status(outcome)
    line = " ".join(
        f"{key}={json.dumps(value, ensure_ascii=False)}"
        for key, value in event.data.items()
        if key != "time" and value is not None
    )
    (logger.info if status == EXIT_DONE else logger.error)("outcome %s", line)
    try:
        write_stash(runtime.splunk_home, event, context["result_index"])
    except OSError as error:
        logger.error("cannot write the outcome event to the spool folder: %s", error)
        status = status or EXIT_FAILED
    if os.environ.get(TIMINGS_ENV) == "1":
        print(json.dumps({"phases_ms": runtime.timings}), file=sys.stderr)
    return status


def process_event(helper, *args, **kwargs) -> int:
    """Entry for UCC's generated ModularAlertBase script (not the shipped one: see
    bin/rm_send_mail.py); `helper.settings` is splunkd's payload."""
    from mailsec.adapters.alert import splunk_home
    from mailsec.adapters.lean_config import LeanSplunkd, load_account, load_settings
    from mailsec.adapters.splunkd import Splunkd

    payload = helper.settings
    splunkd = LeanSplunkd(Splunkd(payload["server_uri"], payload["session_key"]))
    runtime = Runtime(
        splunk_home=splunk_home(),
        load_account=lambda tab, name: load_account(splunkd, tab, name),
        load_settings=lambda: load_settings(splunkd),
    )
    return run(payload, runtime)
