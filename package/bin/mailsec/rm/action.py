"""The `rm_send_mail` alert action: one payload from splunkd, one mail, one outcome.

Every run ends with exactly one outcome: an `rm:mail:send` event written into the
action's `result_index`, the same line in rm_send_mail_modalert.log, and an exit
status (0 on DONE). Requests RM would refuse are refused here with RM's code,
before any network call.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Optional

from mailsec.core.events import build_event
from mailsec.core.params import ConfigError
from mailsec.core.settings import log_level_from_settings, proxy_from_settings
from mailsec.rm import codes, pem_cache, validate
from mailsec.rm.config import RmAccount, RmActionConfig

if TYPE_CHECKING:
    from mailsec.core.alert import AlertOutput

# The action is a new process per mail, started without bytecode caching: modules
# only some mails need (result tables, cryptography, random for retry jitter) are
# imported where they are needed, and none of dataclasses, logging, http.client.

ACTION = "rm_send_mail"
SOURCETYPE = "rm:mail:send"
ACCOUNT_TAB = "rm_account"
TIMINGS_ENV = "TA_MAILSEC_RM_TIMINGS"  # "1": print the phase timings to stderr as JSON

EXIT_DONE = 0
EXIT_NOT_SENT = 2  # refused locally: RM was never called
EXIT_REFUSED = 3  # RM answered with a code other than DONE
EXIT_FAILED = 4  # transport failure, unknown code, or an internal error


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Runtime:
    """What a run takes from its surroundings, given by the entry script (splunkd's
    adapters) or by tests."""

    def __init__(
        self,
        output: AlertOutput,  # the modalert log and the outcome event
        load_account: Optional[Callable[[str, str], dict]] = None,  # (tab, name) -> fields
        load_settings: Optional[Callable[[], dict]] = None,
        cert_cache: Any = None,  # a core.secrets.SecretCache keyed by account; None: none
        sleep: Callable[[float], None] = time.sleep,
        rng: Optional[Callable[[], float]] = None,  # None: rm.client's jitter
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.output = output
        self.load_account = load_account
        self.load_settings = load_settings
        self.cert_cache = cert_cache
        self.sleep = sleep
        self.rng = rng
        self.clock = clock
        self.now = now
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.timings: dict = {}


class Outcome:
    def __init__(
        self,
        code: str,
        detail: Optional[str] = None,
        attempts: int = 0,
        latency_ms: Optional[int] = None,
        http_status: Optional[int] = None,
        sent: bool = False,
    ) -> None:
        self.code = code
        self.detail = detail
        self.attempts = attempts
        self.latency_ms = latency_ms
        self.http_status = http_status
        self.sent = sent


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
    logger = runtime.output.log(ACTION)
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
        from mailsec.rm import render

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
        logger.setLevel(log_level_from_settings(settings))
        proxy = _proxy(settings)
    except ConfigError as error:
        return Outcome("ACCOUNT_INVALID", detail=str(error))
    except Exception as error:  # splunkd unreachable or refusing the session key
        logger.error("cannot read account %r from splunkd: %s", config.account, error)
        return Outcome("ACCOUNT_INVALID", detail=f"cannot read the account: {error}")
    context.update(rm_host=account.hostname, whitelist_name=account.whitelist_name)
    phases.mark("configuration_ms")

    from mailsec.rm import client

    try:
        ssl_context = client.make_ssl_context(account.ca_bundle)
    except (ValueError, OSError) as error:  # ssl.SSLError is an OSError
        return Outcome("ACCOUNT_INVALID", detail=f"ca_bundle: {error}")
    certificate, to_cache = _load_certificate(config.account, account, ssl_context, runtime, logger)
    if isinstance(certificate, Outcome):
        return certificate
    context.update(certificate_subject=certificate.subject, sender=certificate.email)
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
    if to_cache is not None:  # after the mail: caching must not delay or stop it
        _store_in_cache(config.account, to_cache, runtime, logger)
        phases.mark("cache_store_ms")
    return Outcome(
        result.code,
        detail=result.detail,
        attempts=result.attempts,
        latency_ms=result.latency_ms,
        http_status=result.http_status,
        sent=result.sent,
    )


def _load_certificate(name: str, account: RmAccount, ssl_context, runtime: Runtime, logger):
    """Load the client certificate into `ssl_context`, from the PEM cache when it holds
    this PKCS#12, else from the PKCS#12. Returns (certificate, cache entry to store
    or None), or (Outcome, None) when the certificate cannot be used."""
    p12_sha256 = pem_cache.fingerprint(account.client_certificate)
    store = runtime.cert_cache if account.certificate_password else None
    cached = None
    if store is not None:
        try:
            cached = pem_cache.read_entry(store.get(name), p12_sha256)
        except Exception as error:  # the cache is an optimisation: never a failure
            logger.warning("cannot read the certificate cache: %s", error)
    if cached is not None:
        try:
            with pem_cache.pem_files(cached.chain_pem, cached.key_pem) as (chain, key):
                ssl_context.load_cert_chain(chain, key, password=account.certificate_password)
        except (ValueError, OSError):  # the password changed, or the entry is damaged
            logger.info("the cached certificate does not open; opening the PKCS#12 again")
            cached = None
    if cached is not None:
        runtime.timings["certificate_source"] = "cache"
        now = runtime.now().timestamp()
        if not (cached.not_before <= now <= cached.not_after):
            return Outcome("CERTIFICATE_EXPIRED", detail=_validity(cached)), None
        return cached, None

    from mailsec.rm import pkcs12  # cryptography: only when the cache cannot serve

    runtime.timings["certificate_source"] = "pkcs12"
    try:
        certificate = pkcs12.open_pkcs12(
            account.client_certificate, account.certificate_password, runtime.now()
        )
    except pkcs12.CertificateError as error:
        return Outcome(error.code, detail=str(error)), None
    encrypted = certificate.key_pem_encrypted
    key_pem = encrypted if encrypted is not None else certificate.key_pem
    try:
        with pem_cache.pem_files(certificate.chain_pem, key_pem) as (chain, key):
            ssl_context.load_cert_chain(
                chain, key, password=account.certificate_password if encrypted else None
            )
    except (ValueError, OSError) as error:
        return Outcome("ACCOUNT_INVALID", detail=f"client certificate: {error}"), None
    to_cache = None
    if store is not None and encrypted is not None:
        to_cache = pem_cache.entry_json(certificate, p12_sha256)
    return certificate, to_cache


def _validity(cached) -> str:
    def iso(epoch: float) -> str:
        return datetime.fromtimestamp(epoch, timezone.utc).isoformat()

    return (
        f"the client certificate is valid from {iso(cached.not_before)} to {iso(cached.not_after)}"
    )


def _store_in_cache(name: str, entry: str, runtime: Runtime, logger) -> None:
    try:
        runtime.cert_cache.set(name, entry)
        runtime.timings["certificate_cached"] = True
    except Exception as error:  # e.g. a user without the right to write storage/passwords
        logger.warning(
            "cannot cache the client certificate of account %r in splunkd's "
            "storage/passwords (%s): each mail opens the PKCS#12 again, which is slower",
            name,
            error,
        )


def _proxy(settings: dict):
    proxy = proxy_from_settings(settings)
    if proxy is None:
        return None
    if proxy["scheme"] != "http":
        raise ConfigError("proxy_type", "Release Manager mail goes through an HTTP proxy only")
    from mailsec.rm.client import Proxy

    return Proxy(proxy["host"], proxy["port"], proxy["username"], proxy["password"])


def _record(outcome: Outcome, context: dict, runtime: Runtime, logger) -> int:
    started = runtime.clock()
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
        runtime.output.write_event(event, context["result_index"])
    except OSError as error:
        logger.error("cannot write the outcome event to the spool folder: %s", error)
        status = status or EXIT_FAILED
    runtime.timings["record_ms"] = round((runtime.clock() - started) * 1000)
    if os.environ.get(TIMINGS_ENV) == "1":
        # whether the PKCS#12 library was loaded tells a cache hit from a miss
        runtime.timings["cryptography_imported"] = "cryptography" in sys.modules
        started = getattr(sys.modules.get("__main__"), "STARTED", None)
        if started is not None:  # the script's own start: the rest is the interpreter's
            runtime.timings["script_ms"] = round((time.perf_counter() - started) * 1000)
        print(json.dumps({"phases_ms": runtime.timings}), file=sys.stderr)
    return status
