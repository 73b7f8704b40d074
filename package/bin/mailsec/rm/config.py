"""Parameters of the `rm_send_mail` alert action and of an `rm_account`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

from mailsec.core import params as p

INCLUDE_RESULTS = ("none", "table")


class _Fields:
    """Plain attribute holders (not dataclasses: see rm.action), equal when their
    fields are; `_SECRET` fields stay out of repr."""

    __slots__ = ()
    _SECRET: tuple = ()

    def __init__(self, **values) -> None:
        for name in self.__slots__:
            setattr(self, name, values.pop(name, getattr(type(self), "_DEFAULTS", {}).get(name)))
        if values:
            raise TypeError(f"unknown fields: {', '.join(sorted(values))}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{n}={getattr(self, n)!r}" for n in self.__slots__ if n not in self._SECRET
        )
        return f"{type(self).__name__}({shown})"


class RmActionConfig(_Fields):
    __slots__ = (
        "account",
        "html",
        "important",
        "include_results",
        "max_rows",
        "result_index",
        "subject",
        "text",
        "to",
    )
    _DEFAULTS = {
        "important": False,
        "include_results": "none",
        "max_rows": 50,
        "result_index": "main",
    }

    @classmethod
    def from_params(cls, params: Mapping[str, Optional[str]]) -> RmActionConfig:
        return cls(
            account=p.required(params, "account"),
            to=p.text(params, "to", ""),
            subject=p.text(params, "subject"),
            text=p.text(params, "text"),
            html=p.text(params, "html"),
            important=p.boolean(params, "important", False),
            include_results=p.choice(params, "include_results", INCLUDE_RESULTS, "none"),
            max_rows=p.integer(params, "max_rows", 50, minimum=1, maximum=10000),
            result_index=p.text(params, "result_index", "main"),
        )


class RmAccount(_Fields):
    # client_certificate: the base64 of the PKCS#12 file's bytes
    __slots__ = (
        "ca_bundle",
        "certificate_password",
        "client_certificate",
        "hostname",
        "whitelist_name",
    )
    _SECRET = ("client_certificate", "certificate_password")

    @classmethod
    def from_fields(cls, fields: Mapping[str, Optional[str]]) -> RmAccount:
        hostname = p.required(fields, "hostname")
        if "/" in hostname or " " in hostname:
            raise p.ConfigError(
                "hostname", f"must be a host name (optionally :port), not {hostname!r}"
            )
        return cls(
            hostname=hostname,
            whitelist_name=p.required(fields, "whitelist_name"),
            client_certificate=p.required(fields, "client_certificate"),
            certificate_password=p.secret(fields, "certificate_password"),
            ca_bundle=p.text(fields, "ca_bundle"),
        )

    def check(self) -> None:
        """At save time: the PKCS#12 opens with its password and is valid today.

        An unchanged secret comes back from the edit form as `******`; it was
        checked when it was saved, and the other value cannot be checked without it.
        """
        if p.MASKED in (self.client_certificate, self.certificate_password):
            return
        from mailsec.rm.pkcs12 import CertificateError, open_pkcs12

        try:
            open_pkcs12(self.client_certificate, self.certificate_password)
        except CertificateError as error:
            field = (
                "certificate_password"
                if error.code == "CERTIFICATE_PASSWORD_WRONG"
                else "client_certificate"
            )
            raise p.ConfigError(field, str(error)) from None
