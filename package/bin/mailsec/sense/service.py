"""The `sense_listener` input: serve Apigee Sense reports until splunkd stops us.

splunkd starts the script with `interval = 0` (see globalConfig.json): it runs
continuously and is restarted if it exits. `run.stop` is set on SIGTERM or when the
parent splunkd has gone (splunklib has read stdin to its end before we start, so a
closed stdin cannot tell us; see mailsec.adapters.modinput). Then the listener stops
accepting, finishes the requests in flight (each bounded by its deadline) and returns.
"""

from __future__ import annotations

import dataclasses
import ssl
import time
from typing import Callable, Optional

from mailsec.core.params import MASKED, ConfigError
from mailsec.core.runtime import InputRun
from mailsec.sense.config import SenseListenerConfig
from mailsec.sense.dedupe import COLLECTION, MessageLedger
from mailsec.sense.receiver import SenseReceiver
from mailsec.sense.server import Limits, ListenerServer, tls_context

HEARTBEAT_SECONDS = 300.0


def load_config(run: InputRun) -> SenseListenerConfig:
    """The input's parameters with the real API key (the XML only carries `******`)."""
    params = dict(run.params)
    if params.get("api_key_value") == MASKED:
        secret = (run.input_secrets() or {}).get("api_key_value")
        if not secret or secret == MASKED:
            raise ConfigError(
                "api_key_value",
                "the stored key could not be read from storage/passwords; "
                "enter it again on the input's page",
            )
        params["api_key_value"] = secret
    return SenseListenerConfig.from_params(params)


def build_tls(config: SenseListenerConfig) -> Optional[ssl.SSLContext]:
    if not config.tls:
        return None
    try:
        return tls_context(config.tls_cert_file, config.tls_key_file)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(
            "tls_cert_file",
            f"could not load the certificate and key ({error}); give a PEM certificate "
            "chain and its unencrypted PEM private key",
        ) from None


def run(run: InputRun) -> None:
    listen(run)


def listen(
    run: InputRun,
    *,
    limits: Optional[Limits] = None,
    on_listening: Optional[Callable[[ListenerServer], None]] = None,
) -> SenseReceiver:
    config = load_config(run)
    context = build_tls(config)
    limits = limits or Limits()
    if limits.max_body_bytes != config.max_body_bytes:
        limits = dataclasses.replace(limits, max_body_bytes=config.max_body_bytes)
    ledger = MessageLedger(run.open_store(COLLECTION), run.name, logger=run.logger)
    receiver = SenseReceiver(config, run.sink, ledger, run.logger, source=run.full_name)
    try:
        server = ListenerServer(
            (config.bind_address, config.port),
            receiver,
            ssl_context=context,
            limits=limits,
            logger=run.logger,
            admit=receiver.admits,
        )
    except OSError as error:
        raise ConfigError(
            "port", f"cannot listen on {config.bind_address}:{config.port} ({error})"
        ) from None
    if config.api_key_value is None:
        run.logger.warning("action=unauthenticated: any client allowed to connect can post")
    if not config.tls:
        run.logger.warning("action=plain_http: TLS must be terminated by a proxy in front")
    run.logger.info(
        "action=listening address=%s port=%d path=%s tls=%s allowed_sources=%s "
        "max_body_bytes=%d max_connections=%d request_timeout_s=%s",
        config.bind_address,
        server.port,
        config.path,
        config.tls,
        ",".join(str(n) for n in config.allowed_sources) or "any",
        limits.max_body_bytes,
        limits.max_connections,
        limits.request_timeout,
    )
    if on_listening is not None:
        on_listening(server)
    server.serve(run.stop, tick=Heartbeat(run.logger, receiver, server))
    run.logger.info("action=stopped %s", _counts(receiver, server))
    return receiver


def _counts(receiver: SenseReceiver, server: ListenerServer) -> str:
    merged = {"reports": 0, "events": 0, "duplicates": 0, "connections": 0}
    merged.update(receiver.stats + server.stats)
    return " ".join(f"{key}={value}" for key, value in sorted(merged.items()))


class Heartbeat:
    """A log line every few minutes with the running totals: the feed-health panel
    tells "listener up, nothing posted" from "listener down" by it."""

    def __init__(self, logger, receiver, server, every: float = HEARTBEAT_SECONDS) -> None:
        self._logger, self._receiver, self._server = logger, receiver, server
        self._every = every
        self._next = time.monotonic() + every

    def __call__(self) -> None:
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self._every
            self._logger.info("action=heartbeat %s", _counts(self._receiver, self._server))
