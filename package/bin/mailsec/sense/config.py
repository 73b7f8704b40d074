"""Parameters of the `sense_listener` input."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional

from mailsec.core import params as p

# RFC 9110 token characters: what a header name may hold
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Default `allowed_sources` (docs/sense_listener.md): any address, as Sense posts from
# Google's addresses; allowed_sources narrows it.
ANY_ADDRESS = "0.0.0.0"  # noqa: S104


@dataclass(frozen=True)
class SenseListenerConfig:
    port: int
    bind_address: str = ANY_ADDRESS
    path: str = "/sense"
    tls: bool = True
    tls_cert_file: Optional[str] = None
    tls_key_file: Optional[str] = None
    api_key_name: str = "X-API-Key"
    api_key_value: Optional[str] = field(default=None, repr=False)
    allow_unauthenticated: bool = False
    allowed_sources: tuple = ()
    max_body_bytes: int = 1 << 20
    index: Optional[str] = None

    @classmethod
    def from_params(cls, params: Mapping[str, Optional[str]]) -> SenseListenerConfig:
        bind_address = p.text(params, "bind_address", ANY_ADDRESS)
        try:
            ipaddress.ip_address(bind_address)
        except ValueError:
            raise p.ConfigError(
                "bind_address", f"must be an IP address such as 0.0.0.0, not {bind_address!r}"
            ) from None
        path = p.text(params, "path", "/sense")
        if not path.startswith("/") or any(c in path for c in "?# "):
            raise p.ConfigError("path", f"must be a URL path starting with '/', not {path!r}")
        tls = p.boolean(params, "tls", True)
        cert, key = p.text(params, "tls_cert_file"), p.text(params, "tls_key_file")
        if tls:
            for name, value in (("tls_cert_file", cert), ("tls_key_file", key)):
                if value is None:
                    raise p.ConfigError(
                        name, "is required unless tls is set to false for a TLS-terminating proxy"
                    )
                if not os.path.isfile(value):
                    raise p.ConfigError(name, f"no readable file at {value!r}")
        key_name = p.text(params, "api_key_name", "X-API-Key")
        if not _HEADER_NAME.match(key_name):
            raise p.ConfigError("api_key_name", f"is not a valid HTTP header name: {key_name!r}")
        unauthenticated = p.boolean(params, "allow_unauthenticated", False)
        key_value = p.secret(params, "api_key_value")
        if key_value is None and not unauthenticated:
            raise p.ConfigError(
                "api_key_value", "is required unless allow_unauthenticated is set to true"
            )
        return cls(
            port=p.port(params, "port"),
            bind_address=bind_address,
            path=path,
            tls=tls,
            tls_cert_file=cert,
            tls_key_file=key,
            api_key_name=key_name,
            api_key_value=key_value,
            allow_unauthenticated=unauthenticated,
            allowed_sources=tuple(p.cidr_list(params, "allowed_sources")),
            max_body_bytes=p.integer(
                params, "max_body_bytes", 1 << 20, minimum=1024, maximum=64 << 20
            ),
            index=p.text(params, "index"),
        )
