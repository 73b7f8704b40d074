"""Test PKI: a throw-away CA that issues server and client certificates.

Every TLS simulator (SER, Google audit, RM with mutual TLS, the Sense listener
tests, the splunkd stand-in) gets its certificates from here, so tests never
download or commit key material.

RSA 2048 key generation is the slow part (tens to hundreds of milliseconds per
key), so keys come from a small module-level pool that is filled lazily and then
reused round-robin. Sharing a key between two certificates is harmless for tests
with one exception: two CAs with the same key *and* the same subject could vouch
for each other's certificates. Every CA therefore gets a unique subject (a random
``OU``), so a certificate issued by one CA never verifies against another, even if
both happen to hold the same pooled key. Pass ``fresh_key=True`` where a test truly
needs a key of its own.

Usage::

    ca = TestCA.create()
    server = ca.issue_server(("localhost", "127.0.0.1"))
    ctx = server_ssl_context(server)                 # for an ssl-wrapped server
    ca_path = ca.write(tmp_path)                     # requests.get(..., verify=ca_path)
    client = ca.issue_client("rm-client", email="robot@example.org")
    p12 = client.to_pkcs12(b"secret")                # bytes of a .p12 file
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import itertools
import os
import re
import socket
import ssl
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "Issued",
    "TLSHTTPServer",
    "TestCA",
    "client_ssl_context",
    "server_ssl_context",
]

PathLike = Union[str, "os.PathLike[str]"]

# ---------------------------------------------------------------------------
# Key pool
# ---------------------------------------------------------------------------

_POOL_SIZE = 8
_pool: list[rsa.RSAPrivateKey] = []
_pool_lock = threading.Lock()
_pool_next = itertools.count()


def _generate_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pooled_key(fresh: bool = False) -> rsa.RSAPrivateKey:
    """An RSA 2048 key: from the pool (generated on first use), or a new one."""
    if fresh:
        return _generate_key()
    with _pool_lock:
        if len(_pool) < _POOL_SIZE:
            key = _generate_key()
            _pool.append(key)
            return key
        return _pool[next(_pool_next) % _POOL_SIZE]


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "cert"


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write *data* to *path* created with *mode* (no window with wider rights)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # an existing file keeps its old mode otherwise
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            fh.write(data)
    finally:
        if fd != -1:
            os.close(fd)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _san_entries(hostnames: Iterable[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for name in hostnames:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


# ---------------------------------------------------------------------------
# Issued certificates
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, issued by a :class:`TestCA`."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey
    ca_cert: x509.Certificate = field(repr=False)

    @property
    def common_name(self) -> str:
        attrs = self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else ""

    @property
    def cert_pem(self) -> bytes:
        return _cert_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return _key_pem(self.key)

    @property
    def chain_pem(self) -> bytes:
        """The certificate followed by the CA certificate."""
        return self.cert_pem + _cert_pem(self.ca_cert)

    def to_pkcs12(
        self,
        password: Optional[bytes] = None,
        friendly_name: Optional[bytes] = b"ta_mailsec test",
        legacy: bool = False,
    ) -> bytes:
        """PKCS#12 (.p12/.pfx) bytes holding the key, the certificate and the CA.

        With a password the bag is encrypted with the best algorithm cryptography
        offers (AES-256-CBC, PBKDF2); ``legacy=True`` uses SHA1/3DES as older tools
        (and many exported Windows .pfx files) do. Without a password nothing is
        encrypted.
        """
        if password is None:
            encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
        elif legacy:
            encryption = (
                serialization.PrivateFormat.PKCS12.encryption_builder()
                .kdf_rounds(2048)
                .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                .hmac_hash(hashes.SHA1())  # noqa: S303 - that is what legacy means
                .build(password)
            )
        else:
            encryption = serialization.BestAvailableEncryption(password)
        return pkcs12.serialize_key_and_certificates(
            friendly_name, self.key, self.cert, [self.ca_cert], encryption
        )

    def write(self, directory: PathLike, name: Optional[str] = None) -> tuple[Path, Path]:
        """Write ``<name>.crt`` (this certificate only) and ``<name>.key`` (PKCS#8
        PEM), both mode 0600; return their paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        stem = _slug(name or self.common_name)
        cert_path = directory / f"{stem}.crt"
        key_path = directory / f"{stem}.key"
        _write_private(cert_path, self.cert_pem)
        _write_private(key_path, self.key_pem)
        return cert_path, key_path


# ---------------------------------------------------------------------------
# CA
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TestCA:
    """A self-signed certificate authority for tests."""

    __test__ = False  # not a pytest test class, despite the name

    cert: x509.Certificate
    key: rsa.RSAPrivateKey

    @classmethod
    def create(
        cls,
        common_name: str = "TA_mailsec Test CA",
        *,
        valid_days: int = 825,
        fresh_key: bool = False,
    ) -> TestCA:
        key = pooled_key(fresh_key)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "TA_mailsec tests"),
                # Unique per CA: see the module docstring about pooled keys.
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, uuid.uuid4().hex),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert=cert, key=key)

    @property
    def cert_pem(self) -> bytes:
        return _cert_pem(self.cert)

    def write(self, directory: PathLike, name: str = "ca") -> Path:
        """Write the CA certificate as ``<name>.pem`` and return its path (for
        ``requests``' ``verify=`` or an ``ssl`` context's ``cafile``)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{_slug(name)}.pem"
        _write_private(path, self.cert_pem, 0o644)  # a CA certificate is public
        return path

    def _issue(
        self,
        subject: x509.Name,
        sans: list[x509.GeneralName],
        eku: x509.ObjectIdentifier,
        key_usage: x509.KeyUsage,
        valid_days: int,
        fresh_key: bool,
        not_valid_before: Optional[datetime.datetime],
    ) -> Issued:
        key = pooled_key(fresh_key)
        start = not_valid_before or (_now() - datetime.timedelta(days=1))
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert=cert, key=key, ca_cert=self.cert)

    def issue_server(
        self,
        hostnames: Iterable[str] = ("localhost", "127.0.0.1"),
        *,
        valid_days: int = 365,
        fresh_key: bool = False,
        not_valid_before: Optional[datetime.datetime] = None,
    ) -> Issued:
        """A TLS server certificate (serverAuth) for *hostnames*: DNS SANs for
        names, IP SANs for addresses; the subject CN is the first name.

        ``not_valid_before`` with a short ``valid_days`` makes an expired
        certificate for negative tests."""
        names = list(hostnames)
        if not names:
            raise ValueError("a server certificate needs at least one hostname")
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=True,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
        return self._issue(
            subject,
            _san_entries(names),
            ExtendedKeyUsageOID.SERVER_AUTH,
            usage,
            valid_days,
            fresh_key,
            not_valid_before,
        )

    def issue_client(
        self,
        common_name: str,
        email: Optional[str] = None,
        *,
        valid_days: int = 365,
        fresh_key: bool = False,
        not_valid_before: Optional[datetime.datetime] = None,
    ) -> Issued:
        """A TLS client certificate (clientAuth); *email* becomes an rfc822Name SAN."""
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        sans: list[x509.GeneralName] = [x509.RFC822Name(email)] if email else []
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=True,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
        return self._issue(
            subject,
            sans,
            ExtendedKeyUsageOID.CLIENT_AUTH,
            usage,
            valid_days,
            fresh_key,
            not_valid_before,
        )


# ---------------------------------------------------------------------------
# ssl contexts
# ---------------------------------------------------------------------------


def _load_cert_chain(ctx: ssl.SSLContext, issued: Issued) -> None:
    # ssl can only load a certificate chain and key from files: write them to a
    # private temporary directory that is gone before this returns.
    with tempfile.TemporaryDirectory(prefix="ta_mailsec_tls_") as tmp:
        cert_path = Path(tmp) / "chain.pem"
        key_path = Path(tmp) / "key.pem"
        _write_private(cert_path, issued.chain_pem)
        _write_private(key_path, issued.key_pem)
        ctx.load_cert_chain(str(cert_path), str(key_path))


def server_ssl_context(
    issued: Issued,
    ca: Optional[TestCA] = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """A server-side context (TLS 1.2 minimum) presenting *issued* and its CA.

    With ``require_client_cert`` clients must present a certificate issued by *ca*
    (default: the CA that issued *issued*). With *ca* but without
    ``require_client_cert`` a client certificate is asked for and checked when
    presented (CERT_OPTIONAL).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_cert_chain(ctx, issued)
    if require_client_cert or ca is not None:
        ca_pem = ca.cert_pem if ca is not None else _cert_pem(issued.ca_cert)
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_ssl_context(ca: TestCA, client: Optional[Issued] = None) -> ssl.SSLContext:
    """A client-side context trusting only *ca* (hostname checked), optionally
    presenting *client* for mutual TLS."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=ca.cert_pem.decode("ascii"))
    if client is not None:
        _load_cert_chain(ctx, client)
    return ctx


# ---------------------------------------------------------------------------
# A threaded HTTPS server for simulators
# ---------------------------------------------------------------------------


class TLSHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer speaking TLS, for simulators and tests.

    The TLS handshake runs in the connection's worker thread, not in the accept
    loop, so a client that stalls or fails its handshake (a plain-HTTP client, a
    client without the required certificate) never blocks other clients.
    Use as a context manager, or call :meth:`start` / :meth:`stop`::

        with TLSHTTPServer(("127.0.0.1", 0), Handler, server_ssl_context(cert)) as srv:
            requests.get(srv.url + "/path", verify=ca_path)
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(
        self,
        server_address: tuple[str, int],
        handler_class: type[BaseHTTPRequestHandler],
        ssl_context: ssl.SSLContext,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self._connections: set[ssl.SSLSocket] = set()
        self._connections_lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        super().__init__(server_address, handler_class)

    @property
    def host(self) -> str:
        return str(self.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def finish_request(self, request, client_address) -> None:  # type: ignore[override]
        request.settimeout(self.handshake_timeout)
        # Handlers usually write headers and body separately; without NODELAY the
        # second small write waits for the client's delayed ACK (~40 ms a request).
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            # wrap_socket detaches *request*; on a failed handshake the TLS
            # socket closes itself.
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ValueError):
            return
        with self._connections_lock:
            self._connections.add(tls)
        try:
            tls.settimeout(None)  # the handler class applies its own timeout
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            with self._connections_lock:
                self._connections.discard(tls)
            with contextlib.suppress(OSError):
                tls.close()

    def handle_error(self, request, client_address) -> None:
        # Clients that hang up mid-request are normal in failure tests; anything
        # else is printed as usual.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError, socket.timeout)):
            return
        super().handle_error(request, client_address)

    def start(self) -> TLSHTTPServer:
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()
        # Idle keep-alive connections would otherwise keep their threads waiting.
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> TLSHTTPServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
