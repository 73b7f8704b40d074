"""The account's PKCS#12 client certificate, opened in memory with `cryptography`.

Only on a cache miss (see pem_cache): the key is re-encrypted with the certificate
password, so that neither the cache nor the files `ssl` loads it from hold it in
clear. `ssl` loads files: see pem_cache.pem_files.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional


class CertificateError(Exception):
    """The PKCS#12 cannot be used; `code` is the outcome code to report."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True)
class ClientCertificate:
    chain_pem: bytes = field(repr=False)  # the certificate, then any CA certificates
    key_pem: bytes = field(repr=False)  # unencrypted: in memory only
    subject: str
    email: Optional[str]
    not_after: datetime
    not_before: Optional[datetime] = None
    # PKCS#8 encrypted with the certificate password (None without a password)
    key_pem_encrypted: Optional[bytes] = field(default=None, repr=False)


def _decode_base64(value: str) -> bytes:
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise CertificateError(
            "CERTIFICATE_FILE_INVALID", "the stored client certificate is not base64"
        ) from None


def open_pkcs12(
    p12_base64: str, password: Optional[str], now: Optional[datetime] = None
) -> ClientCertificate:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import (
        BestAvailableEncryption,
        Encoding,
        NoEncryption,
        PrivateFormat,
        pkcs12,
    )

    data = _decode_base64(p12_base64)
    secret = password.encode("utf-8") if password else None
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, secret)
    except ValueError as error:
        # cryptography says "Invalid password or PKCS12 data" when the MAC does not
        # verify (wrong password, or damaged content) and "Could not deserialize"
        # when the bytes are not PKCS#12 at all.
        if "password" in str(error).lower():
            raise CertificateError(
                "CERTIFICATE_PASSWORD_WRONG",
                "the certificate password does not open the PKCS#12 file",
            ) from None
        raise CertificateError(
            "CERTIFICATE_FILE_INVALID", "the client certificate is not a PKCS#12 file"
        ) from None
    except TypeError:  # a password given for an unprotected file, or none for a protected one
        raise CertificateError(
            "CERTIFICATE_PASSWORD_WRONG",
            "the certificate password does not open the PKCS#12 file",
        ) from None
    if key is None or cert is None:
        missing = "private key" if key is None else "certificate"
        raise CertificateError("CERTIFICATE_FILE_INVALID", f"the PKCS#12 file holds no {missing}")
    now = now or datetime.now(timezone.utc)
    not_after = cert.not_valid_after_utc
    if not (cert.not_valid_before_utc <= now <= not_after):
        raise CertificateError(
            "CERTIFICATE_EXPIRED",
            f"the client certificate is valid from {cert.not_valid_before_utc.isoformat()} "
            f"to {not_after.isoformat()}",
        )
    try:
        emails = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.RFC822Name)
    except x509.ExtensionNotFound:
        emails = []
    chain = cert.public_bytes(Encoding.PEM) + b"".join(c.public_bytes(Encoding.PEM) for c in extra)
    return ClientCertificate(
        chain_pem=chain,
        key_pem=key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
        subject=cert.subject.rfc4514_string(),
        email=emails[0] if emails else None,
        not_after=not_after,
        not_before=cert.not_valid_before_utc,
        key_pem_encrypted=(
            key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(secret))
            if secret
            else None
        ),
    )
