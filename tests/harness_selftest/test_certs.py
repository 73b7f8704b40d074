"""Self-tests of the test PKI (tests/harness/certs.py)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import stat
import urllib.request
from http.server import BaseHTTPRequestHandler

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from harness.certs import TestCA, TLSHTTPServer, client_ssl_context, server_ssl_context


class _EchoPeer(BaseHTTPRequestHandler):
    """Answers 200 with the client certificate's subject CN (or null)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        peer = self.connection.getpeercert()
        cn = None
        if peer:
            for rdn in peer.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        cn = value
        body = json.dumps({"peer_cn": cn}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def ca():
    return TestCA.create()


@pytest.fixture(scope="module")
def server_cert(ca):
    return ca.issue_server(("localhost", "127.0.0.1"))


def test_ca_and_server_certificate_shape(ca, server_cert):
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.cert_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    san = server_cert.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = server_cert.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert server_cert.cert.issuer == ca.cert.subject
    assert server_cert.key.key_size == 2048
    assert server_cert.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert server_cert.chain_pem == server_cert.cert_pem + ca.cert_pem


def test_client_certificate_has_email_san(ca):
    client = ca.issue_client("rm-client", email="robot@example.org")
    san = client.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["robot@example.org"]
    eku = client.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert client.common_name == "rm-client"
    no_mail = ca.issue_client("plain")
    with pytest.raises(x509.ExtensionNotFound):
        no_mail.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_two_cas_never_vouch_for_each_other(ca):
    # Keys come from a pool; the unique subject keeps CAs apart regardless.
    other = TestCA.create()
    assert other.cert.subject != ca.cert.subject


def test_written_files_are_private(ca, server_cert, tmp_path):
    cert_path, key_path = server_cert.write(tmp_path / "tls")
    for path in (cert_path, key_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key_path.read_bytes() == server_cert.key_pem
    assert cert_path.read_bytes() == server_cert.cert_pem
    ca_path = ca.write(tmp_path)
    assert ca_path.read_bytes() == ca.cert_pem


def test_requests_verifies_with_the_ca_and_fails_without(ca, server_cert, tmp_path):
    ca_path = ca.write(tmp_path)
    with TLSHTTPServer(("127.0.0.1", 0), _EchoPeer, server_ssl_context(server_cert)) as srv:
        for host in ("127.0.0.1", "localhost"):
            url = f"https://{host}:{srv.port}/"
            assert requests.get(url, verify=str(ca_path), timeout=5).json() == {"peer_cn": None}
        # Default trust (this machine's REQUESTS_CA_BUNDLE / certifi) lacks the test CA.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(srv.url, timeout=5)
        # A different CA does not verify it either.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(srv.url, verify=str(TestCA.create().write(tmp_path, "other")), timeout=5)


def test_server_context_is_tls_1_2_or_later(ca, server_cert):
    ctx = server_ssl_context(server_cert)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_NONE
    with TLSHTTPServer(("127.0.0.1", 0), _EchoPeer, ctx) as srv:
        client = client_ssl_context(ca)
        client.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection((srv.host, srv.port), timeout=5) as raw:
            tls = client.wrap_socket(raw, server_hostname="127.0.0.1")
            assert tls.version() == "TLSv1.2"
            tls.close()
    optional = server_ssl_context(server_cert, ca=ca)
    assert optional.verify_mode == ssl.CERT_OPTIONAL
    required = server_ssl_context(server_cert, require_client_cert=True)
    assert required.verify_mode == ssl.CERT_REQUIRED


def test_mutual_tls(ca, server_cert, tmp_path):
    client = ca.issue_client("rm-client", email="robot@example.org")
    cert_path, key_path = client.write(tmp_path)
    ca_path = ca.write(tmp_path)
    ctx = server_ssl_context(server_cert, require_client_cert=True)
    with TLSHTTPServer(("127.0.0.1", 0), _EchoPeer, ctx) as srv:
        ok = requests.get(
            srv.url, verify=str(ca_path), cert=(str(cert_path), str(key_path)), timeout=5
        )
        assert ok.json() == {"peer_cn": "rm-client"}
        # No client certificate: the handshake is refused.
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(srv.url, verify=str(ca_path), timeout=5)
        # A client certificate from another CA: refused too.
        stranger = TestCA.create("Stranger CA").issue_client("intruder")
        s_cert, s_key = stranger.write(tmp_path / "stranger")
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(srv.url, verify=str(ca_path), cert=(str(s_cert), str(s_key)), timeout=5)
        # The server keeps serving good clients after refusing bad ones.
        client_ctx = client_ssl_context(ca, client)
        with urllib.request.urlopen(srv.url, context=client_ctx, timeout=5) as resp:
            assert json.loads(resp.read()) == {"peer_cn": "rm-client"}


def test_pkcs12_round_trip(ca):
    client = ca.issue_client("rm-client", email="robot@example.org")
    for legacy in (False, True):
        blob = client.to_pkcs12(b"s3cret", friendly_name=b"rm", legacy=legacy)
        key, cert, extra = pkcs12.load_key_and_certificates(blob, b"s3cret")
        assert cert == client.cert
        assert [c for c in extra] == [ca.cert]
        assert key.private_numbers() == client.key.private_numbers()
        with pytest.raises(ValueError):
            pkcs12.load_key_and_certificates(blob, b"wrong")
        with pytest.raises((ValueError, TypeError)):
            pkcs12.load_key_and_certificates(blob, None)
    loaded = pkcs12.load_pkcs12(client.to_pkcs12(b"pw", friendly_name=b"rm"), b"pw")
    assert loaded.cert.friendly_name == b"rm"
    # Without a password the bag opens without one.
    key, cert, _ = pkcs12.load_key_and_certificates(client.to_pkcs12(None), None)
    assert cert == client.cert
    assert key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) == (client.key_pem)


def test_expired_certificate_is_rejected(ca, tmp_path):
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=30)
    expired = ca.issue_server(not_valid_before=old, valid_days=2)
    ca_path = ca.write(tmp_path)
    server = TLSHTTPServer(("127.0.0.1", 0), _EchoPeer, server_ssl_context(expired))
    with server, pytest.raises(requests.exceptions.SSLError, match="expired"):
        requests.get(server.url, verify=str(ca_path), timeout=5)
