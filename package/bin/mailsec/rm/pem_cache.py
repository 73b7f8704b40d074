"""The account's client certificate as PEM, cached in splunkd's storage/passwords.

Opening the PKCS#12 takes `cryptography` (about 70 ms to import here) and its key
derivation, on every mail: most of what an alert costs. The first send of an
account converts it once: the certificate chain as PEM, the private key as PKCS#8
*encrypted with the certificate password*, the subject, the sender address and the
validity. That is stored encrypted by splunkd (realm RM_PEM_CACHE_REALM of
mailsec/adapters/settings.py, user = account name; the entry script passes the
cache in), chunked as UCC stores its secrets. Later sends read it with the account's
secrets, in the same REST call, and `ssl` decrypts the key natively.

The entry names the SHA-256 of the stored base64 PKCS#12 it came from: a replaced
certificate is a miss. A changed password cannot decrypt the cached key, so the
send falls back to the PKCS#12 and reports CERTIFICATE_PASSWORD_WRONG as before.
An account without a certificate password is not cached: its key would be stored
unencrypted. A `check` digest over the entry makes a damaged entry a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

FORMAT = 1
TEMP_PREFIX = "ta_mailsec_rm_"
_FIELDS = ("p12_sha256", "cert_pem", "key_pem_encrypted", "not_before", "not_after")


def fingerprint(p12_base64: str) -> str:
    """What the cache entry is keyed on: the stored base64 value, as stored."""
    return hashlib.sha256(p12_base64.encode("utf-8")).hexdigest()


def _check(entry: dict) -> str:
    material = json.dumps(
        [FORMAT, *(entry.get(k) for k in _FIELDS), entry.get("subject"), entry.get("sender")]
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class CachedCertificate:
    """A cache entry that matches the account's current PKCS#12."""

    __slots__ = ("chain_pem", "email", "key_pem", "not_after", "not_before", "subject")

    def __init__(self, entry: dict) -> None:
        self.chain_pem: bytes = entry["cert_pem"].encode("ascii")
        self.key_pem: bytes = entry["key_pem_encrypted"].encode("ascii")
        self.subject: str = entry.get("subject") or ""
        self.email: Optional[str] = entry.get("sender")
        self.not_before: float = float(entry["not_before"])
        self.not_after: float = float(entry["not_after"])

    def __repr__(self) -> str:  # never the key, even encrypted
        return f"CachedCertificate(subject={self.subject!r})"


def entry_json(certificate, p12_sha256: str) -> str:
    """The cache entry of an opened PKCS#12 (a pkcs12.ClientCertificate whose key
    is encrypted with the certificate password)."""
    if certificate.key_pem_encrypted is None:
        raise ValueError("only an encrypted key is cached")
    entry = {
        "format": FORMAT,
        "p12_sha256": p12_sha256,
        "cert_pem": certificate.chain_pem.decode("ascii"),
        "key_pem_encrypted": certificate.key_pem_encrypted.decode("ascii"),
        "not_before": certificate.not_before.timestamp(),
        "not_after": certificate.not_after.timestamp(),
        "subject": certificate.subject,
        "sender": certificate.email,
    }
    entry["check"] = _check(entry)
    return json.dumps(entry, separators=(",", ":"))


def read_entry(text: Optional[str], p12_sha256: str) -> Optional[CachedCertificate]:
    """The cached certificate if `text` is an intact entry for this PKCS#12, else None."""
    if not text:
        return None
    try:
        entry = json.loads(text)
        if (
            not isinstance(entry, dict)
            or entry.get("format") != FORMAT
            or entry.get("p12_sha256") != p12_sha256
            or entry.get("check") != _check(entry)
        ):
            return None
        return CachedCertificate(entry)
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeEncodeError):
        return None


def _memory_file(name: str, data: bytes) -> Optional[int]:
    """An anonymous in-memory file (Linux memfd), or None where there is none."""
    create = getattr(os, "memfd_create", None)
    if create is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        fd = create(name, getattr(os, "MFD_CLOEXEC", 0))
    except OSError:
        return None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def pem_files(
    chain_pem: bytes, key_pem: bytes, in_memory: bool = True
) -> Iterator[tuple[str, str]]:
    """(certificate chain path, key path) for ssl's load_cert_chain, gone when the
    block ends whatever happens inside it.

    On Linux they are anonymous memory files (/proc/self/fd/N): nothing reaches a
    disk and nothing can be left behind. Elsewhere, files 0600 in a private
    temporary folder (0700), removed at the end.
    """
    fds = []
    if in_memory:
        for name, data in (("client.pem", chain_pem), ("client.key", key_pem)):
            fd = _memory_file(name, data)
            if fd is None:
                break
            fds.append(fd)
    try:
        if in_memory and len(fds) == 2:
            yield f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}"
            return
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix=TEMP_PREFIX)  # mkdtemp creates it 0700
        try:
            chain_path = os.path.join(folder, "client.pem")
            key_path = os.path.join(folder, "client.key")
            _write_private(chain_path, chain_pem)
            _write_private(key_path, key_pem)
            yield chain_path, key_path
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        for fd in fds:
            os.close(fd)


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
