"""The account's PKCS#12 client certificate, opened in memory.

`ssl` loads a client certificate and key only from files, so `client_cert_files`
writes them as PEM into a private temporary folder (0700, files 0600) that is
removed when the block ends, whatever happens inside it.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional

TEMP_PREFIX = "ta_mailsec_rm_"


class CertificateError(Exception):
    """The PKCS#12 cannot be used; `code` is the outcome code to report."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True)
class ClientCertificate:
    chain_pem: bytes = field(repr=False)  # the certificate, then any CA certificates
    key_pem: bytes = field(repr=False)
    subject: str
    email: Optional[str]
    not_after: datetime


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
    )


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@contextmanager
def client_cert_files(cert: ClientCertificate) -> Iterator[tuple[str, str]]:
    """(certificate chain path, key path), removed when the block ends."""
    folder = tempfile.mkdtemp(prefix=TEMP_PREFIX)  # mkdtemp creates it 0700
    try:
        chain_path = os.path.join(folder, "client.pem")
        key_path = os.path.join(folder, "client.key")
        _write_private(chain_path, cert.chain_pem)
        _write_private(key_path, cert.key_pem)
        yield chain_path, key_path
    finally:
        shutil.rmtree(folder, ignore_errors=True)
