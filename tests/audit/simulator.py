"""A Google Email Audit API simulator (mailbox exports), faithful to docs/audit_export.md and
the vendor page (seed 004): Atom entries with `<apps:property name= value=>`, the
feed's unprefixed `<entry>` in a document that declares only prefixed namespaces,
`201 Created` for uploads and creations, `numberOfFiles` + `fileUrl0..N-1` when
COMPLETED, MARKED_DELETE before DELETED, EXPIRED three weeks after completion, and
at most 100 export requests a day for the whole domain.

Behind real TLS (a TestCA certificate). Tokens come from a service-account JWT
endpoint that checks the RS256 signature against the account's public key, the
scope, the audience and the subject. Export files are real GnuPG-encrypted mbox
files, encrypted to the key uploaded through the API with the real `gpg`, in a
GnuPG home of the simulator's own. Time comes from an injectable clock so tests
can move three weeks in a millisecond.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Callable, Optional
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import quoteattr

import defusedxml.ElementTree as SafeET
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from audit import corpus
from harness.certs import TestCA, TLSHTTPServer, server_ssl_context

SCOPE = "https://apps-apis.google.com/a/feeds/compliance/audit/"
ATOM = "http://www.w3.org/2005/Atom"
APPS = "http://schemas.google.com/apps/2006"
UTC = timezone.utc
DAILY_LIMIT = 100
PAGE_SIZE = 100

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<entry xmlns:apps='http://schemas.google.com/apps/2006'><apps:property name='status' value='&lol9;'/></entry>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE entry [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<entry xmlns:apps='http://schemas.google.com/apps/2006'><apps:property name='status' value='&xxe;'/></entry>"""


def gpg_keypair(home: str, uid: str, passphrase: str) -> tuple:
    """(armored public, armored private) of a fresh RSA 2048 encryption key."""
    os.makedirs(home, mode=0o700, exist_ok=True)
    with open(os.path.join(home, "gpg-agent.conf"), "w") as conf:
        conf.write("allow-loopback-pinentry\n")
    base = ["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback"]
    subprocess.run(
        [*base, "--passphrase", passphrase, "--quick-gen-key", uid, "rsa2048", "encr", "never"],
        check=True,
        capture_output=True,
    )
    public = subprocess.run([*base, "--armor", "--export", uid], check=True, capture_output=True)
    private = subprocess.run(
        [*base, "--passphrase", passphrase, "--armor", "--export-secret-keys", uid],
        check=True,
        capture_output=True,
    )
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False)
    return public.stdout.decode(), private.stdout.decode()


def service_account(domain: str) -> tuple:
    """(service account JSON text, its RSA public key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "audit-sim",
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": "splunk-audit@audit-sim.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return json.dumps(info), key.public_key()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Export:
    request_id: str
    user: str  # local part
    begin: str
    end: str
    include_deleted: str
    search_query: Optional[str]
    package_content: str
    request_date: datetime
    polls_left: int
    outcome: str = "COMPLETED"  # or ERROR
    status: str = "PENDING"
    completed: Optional[datetime] = None
    files: list = field(default_factory=list)  # tokens
    deletes: int = 0
    specs: list = field(default_factory=list)


class AuditSimulator:
    def __init__(
        self,
        ca: TestCA,
        domain: str = "example.com",
        admin: str = "admin@example.com",
        clock: Callable[[], float] = time.time,
        messages_per_export: int = 9,
        files_per_export: int = 2,
        polls_until_done: int = 2,
        marked_delete_times: int = 2,
        passphrase: str = "",
    ) -> None:
        self.ca = ca
        self.domain = domain
        self.admin = admin
        self.clock = clock
        self.messages_per_export = messages_per_export
        self.files_per_export = files_per_export
        self.polls_until_done = polls_until_done
        self.marked_delete_times = marked_delete_times
        self.sa_json, self._sa_public = service_account(domain)
        self.client_email = json.loads(self.sa_json)["client_email"]
        self._gpg_home = tempfile.mkdtemp(prefix="audit_sim_gpg_")
        self._lock = threading.RLock()
        self.exports: dict = {}
        self.files: dict = {}  # token -> encrypted bytes
        self.tokens: dict = {}  # access token -> expiry
        self.public_key: Optional[str] = None
        self._recipient: Optional[str] = None
        self._next_id = 53156
        self.created_per_day: Counter = Counter()
        self.calls: Counter = Counter()
        self.log: list = []
        # switches
        # hostile answers, per endpoint ("publickey", "create", "status", "list",
        # "delete") or per (endpoint, user): "billion_laughs" | "external_entity"
        self.hostile: dict = {}
        self.error_users: set = set()  # exports of these users end in ERROR
        self.file_faults: dict = defaultdict(dict)  # user -> {file index: fault}
        self.download_cut: set = set()  # tokens served cut short once
        self.on_file_chunk: Optional[Callable[[str, int], None]] = None
        # user -> strftime form of completedDate: Google documents 'YYYY-MM-DD HH:MM'
        # but its dates drift (seconds, an ISO 'T'), as other vendors' do
        self.completed_date_forms: dict = {}
        server = ca.issue_server(("localhost", "127.0.0.1"))
        self.server = TLSHTTPServer(("127.0.0.1", 0), self._handler(), server_ssl_context(server))

    # -- lifecycle ------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token_url(self) -> str:
        return self.server.url + "/token"

    def start(self) -> AuditSimulator:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()
        subprocess.run(
            ["gpgconf", "--homedir", self._gpg_home, "--kill", "gpg-agent"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self._gpg_home, ignore_errors=True)

    def __enter__(self) -> AuditSimulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def account_fields(self, public_key: str, private_key: str, passphrase: str = "") -> dict:
        fields = {
            "domain": self.domain,
            "admin_email": self.admin,
            "service_account_json": self.sa_json,
            "pgp_public_key": public_key,
            "pgp_private_key": private_key,
            "api_url": self.url,
            "token_url": self.token_url,
            "ca_bundle": self.ca.cert_pem.decode(),
        }
        if passphrase:
            fields["pgp_passphrase"] = passphrase
        return fields

    def serve_hostile(self, kind: Optional[str], *endpoints: str, user: Optional[str] = None):
        """Answer `endpoints` (all users', or one user's) with a hostile document
        instead of the Atom entry; `kind=None` turns them back to normal. The
        request itself is still carried out, as when something between Google and
        the input rewrites the answer."""
        for endpoint in endpoints:
            key = endpoint if user is None else (endpoint, user)
            if kind is None:
                self.hostile.pop(key, None)
            else:
                self.hostile[key] = kind

    def specs_for(self, user: str, begin: str, end: str) -> list:
        """The message specs an export of `user` for [begin, end) will hold
        (dates as `YYYY-MM-DD HH:MM`): known before the export is even requested."""
        start = datetime.strptime(begin, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
        address = f"{user}@{self.domain}"
        return corpus.build(
            address, start, self.messages_per_export, seed=f"{address}|{begin}|{end}"
        )

    def expected_specs(self) -> dict:
        """request_id -> message specs, for every export that completed."""
        with self._lock:
            return {rid: list(e.specs) for rid, e in self.exports.items() if e.specs}

    # -- behaviour ------------------------------------------------------------
    def _check_jwt(self, assertion: str) -> Optional[str]:
        try:
            header_b64, claims_b64, signature_b64 = assertion.split(".")
            header = json.loads(_b64url_decode(header_b64))
            claims = json.loads(_b64url_decode(claims_b64))
            self._sa_public.verify(
                _b64url_decode(signature_b64),
                f"{header_b64}.{claims_b64}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except Exception:
            return "invalid_grant: bad JWT signature"
        if header.get("alg") != "RS256":
            return "invalid_grant: alg must be RS256"
        if claims.get("iss") != self.client_email:
            return "invalid_grant: unknown issuer"
        if claims.get("aud") != self.token_url:
            return "invalid_grant: wrong audience"
        if claims.get("scope") != SCOPE:
            return "unauthorized_client: scope not granted in domain-wide delegation"
        if claims.get("sub") != self.admin:
            return "unauthorized_client: subject is not the delegated admin"
        now = self.clock()
        if not (claims.get("iat", 0) - 300 <= now <= claims.get("exp", 0)):
            return "invalid_grant: JWT expired or not yet valid"
        return None

    def _upload_key(self, encoded: str) -> None:
        armored = base64.b64decode(encoded).decode("ascii")
        result = subprocess.run(
            ["gpg", "--homedir", self._gpg_home, "--batch", "--import", "--status-fd", "1"],
            input=armored.encode(),
            capture_output=True,
            check=True,
        )
        fingerprints = [
            line.split()[-1]
            for line in result.stdout.decode().splitlines()
            if line.startswith("[GNUPG:] IMPORT_OK")
        ]
        self.public_key = armored
        self._recipient = fingerprints[-1]

    def _encrypt(self, plaintext: bytes) -> bytes:
        result = subprocess.run(
            [
                "gpg",
                "--homedir",
                self._gpg_home,
                "--batch",
                "--trust-model",
                "always",
                "--encrypt",
                "--recipient",
                self._recipient,
                "--output",
                "-",
            ],
            input=plaintext,
            capture_output=True,
            check=True,
        )
        return result.stdout

    def _complete(self, export: Export) -> None:
        export.completed = self.now()
        if export.outcome == "ERROR" or export.user in self.error_users:
            export.status = "ERROR"
            return
        specs = self.specs_for(export.user, export.begin, export.end)
        export.specs = specs
        faults = self.file_faults.get(export.user, {})
        for index in range(self.files_per_export):
            part = specs[index :: self.files_per_export]
            plaintext = corpus.mbox(part, export.completed)
            fault = faults.get(index)
            if fault == "truncated_mbox":
                plaintext = plaintext[: len(plaintext) - 300]
            data = self._encrypt(plaintext)
            if fault == "corrupt":
                data = data[:40] + bytes(b ^ 0x5A for b in data[40:400]) + data[400:]
            elif fault == "truncated_pgp":
                data = data[: len(data) * 2 // 3]
            token = secrets.token_urlsafe(24)
            self.files[token] = data
            export.files.append(token)
        export.status = "COMPLETED"

    def _current(self, export: Export) -> None:
        if (
            export.status == "COMPLETED"
            and export.completed is not None
            and self.now() - export.completed >= timedelta(days=21)
        ):
            export.status = "EXPIRED"
            self._drop_files(export)

    def _drop_files(self, export: Export) -> None:
        for token in export.files:
            self.files.pop(token, None)

    # -- XML ------------------------------------------------------------------
    def _entry(self, export: Export, tag: str = "entry") -> str:
        url = f"{self.url}/a/feeds/compliance/audit/mail/export/{self.domain}/{export.user}/{export.request_id}"
        props = [
            ("status", export.status),
            ("packageContent", export.package_content),
            ("includeDeleted", export.include_deleted),
        ]
        if export.search_query:
            props.append(("searchQuery", export.search_query))
        if export.completed is not None:
            form = self.completed_date_forms.get(export.user, "%Y-%m-%d %H:%M")
            props.append(("completedDate", export.completed.strftime(form)))
        props.append(("adminEmailAddress", self.admin))
        if export.status in ("COMPLETED", "ERROR"):
            props.append(
                ("numberOfFiles", str(len(export.files) if export.status == "COMPLETED" else 0))
            )
        props += [
            ("requestId", export.request_id),
            ("userEmailAddress", f"{export.user}@{self.domain}"),
            ("endDate", export.end),
            ("requestDate", export.request_date.strftime("%Y-%m-%d %H:%M")),
            ("beginDate", export.begin),
        ]
        if export.status == "COMPLETED":
            for index, token in enumerate(export.files):
                props.append((f"fileUrl{index}", f"{self.url}/a/data/compliance/audit/{token}"))
        lines = [
            f"<{tag} xmlns:atom='{ATOM}' xmlns:apps='{APPS}'>" if tag == "entry" else f"<{tag}>",
            f"<id>{url}</id>",
            f"<updated>{self.now().strftime('%Y-%m-%dT%H:%M:%S.000Z')}</updated>",
            f"<link rel='self' type='application/atom+xml' href='{url}'/>",
            f"<link rel='edit' type='application/atom+xml' href='{url}'/>",
        ]
        lines += [f"<apps:property name='{n}' value={quoteattr(v)}/>" for n, v in props]
        lines.append(f"</{tag}>")
        return "\n".join(lines)

    def _feed(self, exports: list, next_url: Optional[str], self_url: str) -> str:
        head = [
            f"<feed xmlns:atom='{ATOM}' xmlns:openSearch='http://a9.com/-/spec/opensearchrss/1.0/' "
            f"xmlns:apps='{APPS}'>",
            f"<id>{self.url}/a/feeds/compliance/audit/mail/export/{self.domain}</id>",
            f"<updated>{self.now().strftime('%Y-%m-%dT%H:%M:%S.000Z')}</updated>",
        ]
        if next_url:
            head.append(
                f"<link rel='next' type='application/atom+xml' href={quoteattr(next_url)}/>"
            )
        head.append(f"<link rel='self' type='application/atom+xml' href={quoteattr(self_url)}/>")
        head.append("<openSearch:startIndex>1</openSearch:startIndex>")
        # entries inside a feed carry no namespace declaration, as in Google's sample
        body = [
            self._entry(e, tag="entry").replace(f" xmlns:atom='{ATOM}' xmlns:apps='{APPS}'", "")
            for e in exports
        ]
        return "\n".join(head + body + ["</feed>"])

    # -- HTTP -----------------------------------------------------------------
    def _handler(self):
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(
                self,
                status: int,
                body: bytes,
                endpoint: str,
                user: Optional[str] = None,
            ) -> None:
                ctype = "application/atom+xml"
                kind = sim.hostile.get((endpoint, user)) or sim.hostile.get(endpoint)
                if kind:
                    sim.calls[f"hostile_{endpoint}"] += 1
                    body = BILLION_LAUGHS if kind == "billion_laughs" else EXTERNAL_ENTITY
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, reason: str) -> None:
                body = (
                    "<?xml version='1.0' encoding='UTF-8'?><AppsForYourDomainErrors>"
                    f"<error errorCode='1000' invalidInput='' reason={quoteattr(reason)}/>"
                    "</AppsForYourDomainErrors>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length)

            def _authorized(self) -> bool:
                value = self.headers.get("Authorization", "")
                token = value[7:] if value.startswith("Bearer ") else ""
                with sim._lock:
                    expiry = sim.tokens.get(token)
                if expiry is None or expiry < sim.clock():
                    self._error(401, "Token invalid")
                    return False
                return True

            def do_POST(self) -> None:
                path = urlsplit(self.path).path
                body = self._body()
                sim.log.append(("POST", path))
                if path == "/token":
                    return self._token(body)
                if not self._authorized():
                    return None
                parts = path.strip("/").split("/")
                if parts[:5] == ["a", "feeds", "compliance", "audit", "publickey"]:
                    return self._publickey(parts, body)
                if (
                    parts[:6] == ["a", "feeds", "compliance", "audit", "mail", "export"]
                    and len(parts) == 8
                ):
                    return self._create(parts[6], unquote(parts[7]), body)
                return self._error(404, "unknown feed")

            def do_GET(self) -> None:
                split = urlsplit(self.path)
                parts = split.path.strip("/").split("/")
                sim.log.append(("GET", split.path))
                if not self._authorized():
                    return None
                if parts[:4] == ["a", "data", "compliance", "audit"] and len(parts) == 5:
                    return self._file(parts[4])
                if parts[:6] == ["a", "feeds", "compliance", "audit", "mail", "export"]:
                    if len(parts) == 7:
                        return self._list(parts[6], parse_qs(split.query))
                    if len(parts) == 9:
                        return self._status(parts[6], unquote(parts[7]), parts[8])
                return self._error(404, "unknown feed")

            def do_DELETE(self) -> None:
                parts = urlsplit(self.path).path.strip("/").split("/")
                sim.log.append(("DELETE", self.path))
                if not self._authorized():
                    return None
                if (
                    parts[:6] == ["a", "feeds", "compliance", "audit", "mail", "export"]
                    and len(parts) == 9
                ):
                    return self._delete(parts[6], unquote(parts[7]), parts[8])
                return self._error(404, "unknown feed")

            # -- endpoints --------------------------------------------------
            def _token(self, body: bytes) -> None:
                form = parse_qs(body.decode())
                sim.calls["token"] += 1
                if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
                    return self._json(400, {"error": "unsupported_grant_type"})
                problem = sim._check_jwt((form.get("assertion") or [""])[0])
                if problem:
                    error, _, description = problem.partition(": ")
                    return self._json(400, {"error": error, "error_description": description})
                token = secrets.token_urlsafe(32)
                with sim._lock:
                    sim.tokens[token] = sim.clock() + 3600
                return self._json(
                    200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}
                )

            def _json(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _properties(self, body: bytes) -> Optional[dict]:
                if self.headers.get("Content-Type", "").split(";")[0] != "application/atom+xml":
                    self._error(400, "Content-type must be application/atom+xml")
                    return None
                try:
                    root = SafeET.fromstring(body, forbid_dtd=True)
                except Exception:
                    self._error(400, "Invalid request entry")
                    return None
                return {p.get("name"): p.get("value") for p in root.iter(f"{{{APPS}}}property")}

            def _publickey(self, parts: list, body: bytes) -> None:
                if parts[5] != sim.domain:
                    return self._error(403, "You are not authorized to access this API")
                props = self._properties(body)
                if props is None:
                    return None
                try:
                    with sim._lock:
                        sim._upload_key(props.get("publicKey", ""))
                except Exception:
                    return self._error(400, "Invalid public key")
                sim.calls["publickey"] += 1
                url = f"{sim.url}/a/feeds/compliance/audit/publickey/{sim.domain}/id"
                entry = (
                    f"<entry xmlns:atom='{ATOM}' xmlns:apps='{APPS}'>\n<id>{url}</id>\n"
                    f"<updated>{sim.now().strftime('%Y-%m-%dT%H:%M:%S.000Z')}</updated>\n"
                    f"<link rel='self' type='application/atom+xml' href='{url}'/>\n"
                    f"<link rel='edit' type='application/atom+xml' href='{url}'/>\n"
                    f"<apps:property name='publicKey' value={quoteattr(props['publicKey'])}/>\n</entry>"
                )
                return self._send(201, entry.encode(), "publickey")

            def _create(self, domain: str, user: str, body: bytes) -> None:
                if domain != sim.domain:
                    return self._error(403, "You are not authorized to access this API")
                props = self._properties(body)
                if props is None:
                    return None
                try:
                    begin = datetime.strptime(props.get("beginDate", ""), "%Y-%m-%d %H:%M")
                    end = datetime.strptime(props.get("endDate", ""), "%Y-%m-%d %H:%M")
                except ValueError:
                    return self._error(400, "Invalid date format: use YYYY-MM-DD HH:MM")
                if begin >= end:
                    return self._error(400, "beginDate must be before endDate")
                if end.replace(tzinfo=UTC) > sim.now():
                    return self._error(400, "endDate is in the future")
                if props.get("packageContent", "FULL_MESSAGE") not in (
                    "FULL_MESSAGE",
                    "HEADER_ONLY",
                ):
                    return self._error(400, "Invalid packageContent")
                if props.get("includeDeleted", "false") not in ("true", "false"):
                    return self._error(400, "Invalid includeDeleted")
                if props.get("includeDeleted") == "true" and props.get("searchQuery"):
                    # the vendor page: searchQuery and includeDeleted are mutually exclusive
                    return self._error(400, "includeDeleted and searchQuery cannot both be set")
                with sim._lock:
                    if sim._recipient is None:
                        return self._error(400, "No public key uploaded for the domain")
                    day = sim.now().strftime("%Y-%m-%d")
                    if sim.created_per_day[day] >= DAILY_LIMIT:
                        sim.calls["quota_refused"] += 1
                        return self._error(
                            403,
                            f"Export request limit of {DAILY_LIMIT} a day exceeded for the domain",
                        )
                    sim.created_per_day[day] += 1
                    export = Export(
                        request_id=str(sim._next_id),
                        user=user,
                        begin=props["beginDate"],
                        end=props["endDate"],
                        include_deleted=props.get("includeDeleted", "false"),
                        search_query=props.get("searchQuery"),
                        package_content=props.get("packageContent", "FULL_MESSAGE"),
                        request_date=sim.now(),
                        polls_left=sim.polls_until_done,
                    )
                    sim._next_id += 1
                    sim.exports[export.request_id] = export
                    sim.calls["create"] += 1
                    return self._send(201, sim._entry(export).encode(), "create", user)

            def _status(self, domain: str, user: str, request_id: str) -> None:
                with sim._lock:
                    export = sim.exports.get(request_id)
                    if domain != sim.domain or export is None or export.user != user:
                        return self._error(404, "Invalid request id")
                    sim.calls["status"] += 1
                    if export.status == "PENDING":
                        export.polls_left -= 1
                        if export.polls_left <= 0:
                            sim._complete(export)
                    sim._current(export)
                    return self._send(200, sim._entry(export).encode(), "status", user)

            def _list(self, domain: str, query: dict) -> None:
                if domain != sim.domain:
                    return self._error(403, "You are not authorized to access this API")
                from_date = (query.get("fromDate") or [None])[0]
                start = int((query.get("start-index") or ["1"])[0])
                with sim._lock:
                    sim.calls["list"] += 1
                    if from_date:
                        floor = datetime.strptime(from_date, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
                    else:
                        floor = sim.now() - timedelta(weeks=3)
                    chosen = [e for e in sim.exports.values() if e.request_date >= floor]
                    for export in chosen:
                        sim._current(export)
                    page = chosen[start - 1 : start - 1 + PAGE_SIZE]
                    base = f"{sim.url}/a/feeds/compliance/audit/mail/export/{sim.domain}"
                    query_from = f"fromDate={from_date.replace(' ', '%20')}&" if from_date else ""
                    next_url = None
                    if start - 1 + PAGE_SIZE < len(chosen):
                        next_url = f"{base}?{query_from}start-index={start + PAGE_SIZE}"
                    self_url = f"{base}?{query_from}start-index={start}"
                    return self._send(200, sim._feed(page, next_url, self_url).encode(), "list")

            def _delete(self, domain: str, user: str, request_id: str) -> None:
                with sim._lock:
                    export = sim.exports.get(request_id)
                    if domain != sim.domain or export is None or export.user != user:
                        return self._error(404, "Invalid request id")
                    sim.calls["delete"] += 1
                    export.deletes += 1
                    if export.deletes <= sim.marked_delete_times:
                        export.status = "MARKED_DELETE"
                    else:
                        export.status = "DELETED"
                        sim._drop_files(export)
                    return self._send(200, sim._entry(export).encode(), "delete", user)

            def _file(self, token: str) -> None:
                with sim._lock:
                    data = sim.files.get(token)
                    cut = token in sim.download_cut
                    sim.download_cut.discard(token)
                    sim.calls["file"] += 1
                if data is None:
                    return self._error(404, "File not found or expired")
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                served = data[: len(data) // 2] if cut else data
                step = 16384
                for offset in range(0, len(served), step):
                    if sim.on_file_chunk is not None:
                        sim.on_file_chunk(token, offset)
                    self.wfile.write(served[offset : offset + step])
                if cut:
                    self.close_connection = True
                return None

        return Handler


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
