"""A Google Vault API + Cloud Storage simulator (mail exports), over real TLS.

Facts it is built on, with their sources:
- developers.google.com/workspace/vault/reference/rest/v1/matters:
  `POST /v1/matters` {name, description} answers the Matter with `matterId` and
  `state` OPEN; `GET /v1/matters/{matterId}`; states OPEN, CLOSED, DELETED.
- .../rest/v1/matters.exports (Export resource): `id`, `matterId`, `name`, `query`,
  `exportOptions`, `createTime`, `status` (IN_PROGRESS, COMPLETED, FAILED), `stats`
  {exportedArtifactCount, sizeInBytes, totalArtifactCount}, `cloudStorageSink`
  {files: [{bucketName, objectName, size, md5Hash}]}; md5Hash is the file's MD5 in
  hex (PLATFORM_NOTES; Cloud Storage's own `x-goog-hash` uses base64).
  create: `POST /v1/matters/{matterId}/exports`, scope .../auth/ediscovery;
  list: `GET .../exports?pageSize&pageToken` → {exports, nextPageToken};
  get and delete: `.../exports/{exportId}`.
- .../rest/v1/Query: corpus MAIL, dataScope (ALL_DATA, HELD_DATA,
  UNPROCESSED_DATA), method ACCOUNT with accountInfo.emails, startTime/endTime
  (RFC 3339), timeZone, terms, mailOptions.excludeDrafts; "Vault rounds the start
  and end times to 12 AM on the specified date" (PLATFORM_NOTES).
- developers.google.com/workspace/vault/limits: at most 20 exports in progress
  across the organization; per project and minute 120 export reads and 20 export
  writes; exports.create costs 1 read and 10 writes, delete 1 write, get 1 read,
  list 1 read; beyond, 429 RESOURCE_EXHAUSTED (Google's JSON error format:
  {"error": {"code", "message", "status"}}). The answer to a creation beyond the
  20-in-progress ceiling is not documented: it is modelled as the same 429 (the
  input defers creation on any 429, and counts its own in-progress exports anyway).
- developers.google.com/workspace/vault/guides/exports: exports live 15 days, then
  Google deletes them (the export is gone from get and list; its files too).
- cloud.google.com/storage/docs/json_api/v1/objects/get and .../docs/xml-api/
  reference-headers#range: `GET /storage/v1/b/{bucket}/o/{object, URL-encoded}
  ?alt=media` with the bearer token (scope devstorage.read_only), `Range:
  bytes=a-b` honoured with 206 and Content-Range, 416 when not satisfiable.
- support.google.com/vault/answer/6099459: the export's files (see archive.py).

Tokens come from a service-account JWT endpoint (harness/google_token.py) that
grants exactly the two scopes the account's domain-wide delegation lists. Time
comes from an injectable clock, so tests can move 15 days in a millisecond; the
throttle and the benchmark's transfer use the real clock.

Injectable faults: a wrong md5Hash listed, a truncated object, 5xx bursts, a
connection dropped mid-transfer, a throttled transfer rate, a lost create answer
(the export is made, the connection drops before the answer), FAILED exports, 429s;
and what a review of the reader feared from the vendor: a COMPLETED export listed
without its cloudStorageSink (the resource marks the field "Output only" and says
nothing of when it is filled), storage answering 403 or revoking a token early
(401, Google's UNAUTHENTICATED error), a token endpoint refusing (400
invalid_grant), a 206 carrying more than the range asked for, and a zip whose end
record announces a central directory of gigabytes (APPNOTE 4.3.16).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Callable, Optional, Union
from urllib.parse import parse_qs, quote, unquote, urlsplit

from audit import corpus
from audit.simulator import service_account

from harness.certs import TestCA, TLSHTTPServer, server_ssl_context
from harness.google_token import GRANT_TYPE, check_assertion
from vault import archive

UTC = timezone.utc
EDISCOVERY = "https://www.googleapis.com/auth/ediscovery"
STORAGE_READ = "https://www.googleapis.com/auth/devstorage.read_only"
ORG_IN_PROGRESS_LIMIT = 20
EXPORT_READS_PER_MINUTE = 120
EXPORT_WRITES_PER_MINUTE = 20
CREATE_WRITE_COST = 10
DELETED_AFTER = timedelta(days=15)
BUCKET = "vault-export-sim-bucket"
DEFAULT_PAGE_SIZE = 10  # the list's default when pageSize is absent (docs: unspecified)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

ObjectData = Union[bytes, str]  # the bytes, or the path of a file holding them


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> datetime:
    text = text.strip().replace("Z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = re.match(r"\d*", rest).group()
        text = head + "." + digits[:6].ljust(6, "0") + rest[len(digits) :]
    return datetime.fromisoformat(text).astimezone(UTC)


def midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class VaultExport:
    id: str
    matter_id: str
    name: str
    body: dict
    emails: list
    start: datetime  # rounded to 12 AM, as Vault does
    end: datetime
    create_time: datetime
    polls_left: int
    status: str = "IN_PROGRESS"
    files: list = field(default_factory=list)  # dicts as in cloudStorageSink.files
    specs: dict = field(default_factory=dict)  # account -> message specs
    exported: int = 0
    size: int = 0

    def resource(self) -> dict:
        out = {
            "id": self.id,
            "matterId": self.matter_id,
            "name": self.name,
            "query": self.body.get("query", {}),
            "exportOptions": self.body.get("exportOptions", {}),
            "createTime": rfc3339(self.create_time),
            "status": self.status,
            "requester": {"email": "admin@example.com", "displayName": "Admin"},
        }
        if self.status != "IN_PROGRESS":
            out["stats"] = {
                "exportedArtifactCount": str(self.exported),  # int64 fields travel as strings
                "sizeInBytes": str(self.size),
                "totalArtifactCount": str(self.exported),
            }
        if self.status == "COMPLETED":
            out["cloudStorageSink"] = {"files": [dict(f) for f in self.files]}
        return out


class VaultSimulator:
    def __init__(
        self,
        ca: TestCA,
        domain: str = "example.com",
        admin: str = "admin@example.com",
        clock: Callable[[], float] = time.time,
        messages_per_export: int = 9,
        polls_until_done: int = 1,
    ) -> None:
        self.ca = ca
        self.domain = domain
        self.admin = admin
        self.clock = clock
        self.messages_per_export = messages_per_export
        self.polls_until_done = polls_until_done
        self.sa_json, self._sa_public = service_account(domain)
        self.client_email = json.loads(self.sa_json)["client_email"]
        self.granted_scopes = frozenset({EDISCOVERY, STORAGE_READ})
        self._lock = threading.RLock()
        self.matters: dict = {}
        self.exports: dict = {}  # export id -> VaultExport
        self.completed_specs: dict = {}  # export id -> {account: specs}, kept after deletion
        self.objects: dict = {}  # object name -> ObjectData
        self.tokens: dict = {}  # access token -> (expiry, scopes)
        self.calls: Counter = Counter()
        self.creates_by_name: Counter = Counter()
        self.creates_by_matter: Counter = Counter()
        self.quota_used: Counter = Counter()  # (minute, "read"|"write") -> units
        self.peak_in_progress = 0
        self._next = 1000
        # switches
        self.form = "plain"  # archive form: plain, zip64, nested, nested_deflated
        self.mbox_files_per_export = 1  # mbox members, each in its own zip file
        self.page_size_cap = 100
        self.in_progress_limit = ORG_IN_PROGRESS_LIMIT
        self.enforce_rate_quota = True
        self.quota_429: int = 0  # the next N export creates answer 429 whatever the count
        self.lose_create_answer: int = 0  # the next N creates are made, their answer lost
        self.fail_users: Counter = Counter()  # user -> exports of theirs that end FAILED
        self.wrong_md5: Counter = Counter()  # user -> gets listing a wrong md5Hash
        self.truncated: set = set()  # users whose zip objects are stored cut short
        self.damaged: set = set()  # users whose zips are damaged at Google (MD5 of the damage)
        self.bursts_5xx: int = 0  # the next N media requests answer 503
        self.storage_status: Optional[int] = None  # every media request answers this
        # the next N requests for a whole object (the download thread's) answer 401,
        # and the token they carried is revoked
        self.revoke_on_stream: int = 0
        self.revoke_on_get: int = 0  # the next N export gets: 401, their token revoked
        self.token_refusals: int = 0  # the next N token requests answer invalid_grant
        self.refuse_renewal = False  # the next revocation also refuses the next token request
        self.no_sink: Counter = Counter()  # user -> gets of a COMPLETED export without its sink
        self.overlong_ranges = False  # a 206 sends on to the object's end
        self.huge_directory: set = set()  # users whose zips announce a 3 GiB central directory
        # user -> bytes sent before the connection drops, once, in a transfer of a
        # whole zip (not in a Range read of its end)
        self.drop_after: dict = {}
        self.rate_bytes_per_s: Optional[float] = None
        self.on_media_chunk: Optional[Callable[[str, int], None]] = None
        self.range_requests: list = []  # (object, Range header) of every media request
        self.archive_file: Optional[tuple] = None  # (path, md5 hex): served as every zip
        self.completed_at: dict = {}  # export id -> time.time() when it turned COMPLETED
        server = ca.issue_server(("localhost", "127.0.0.1"))
        self.server = TLSHTTPServer(("127.0.0.1", 0), self._handler(), server_ssl_context(server))

    # -- lifecycle ------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token_url(self) -> str:
        return self.server.url + "/token"

    def start(self) -> VaultSimulator:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> VaultSimulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def account_fields(self) -> dict:
        """A google_account for Vault only: no PGP fields."""
        return {
            "domain": self.domain,
            "admin_email": self.admin,
            "service_account_json": self.sa_json,
            "vault_url": self.url,
            "storage_url": self.url,
            "token_url": self.token_url,
            "ca_bundle": self.ca.cert_pem.decode(),
        }

    # -- truth for the tests ---------------------------------------------------
    def specs_for(self, account: str, start: datetime, end: datetime) -> list:
        """The messages an export of `account` for [start, end) holds (whole days)."""
        seed = f"{account}|{start.date().isoformat()}|{end.date().isoformat()}"
        # the corpus makes Message-IDs from the seed's first 8 characters: a digest first
        digest = hashlib.sha256(seed.encode()).hexdigest()[:8]
        return corpus.build(account, start, self.messages_per_export, seed=f"{digest}|{seed}")

    def expected_message_ids(self) -> set:
        with self._lock:
            return {
                f"<{spec.message_id}>"
                for by_account in self.completed_specs.values()
                for specs in by_account.values()
                for spec in specs
            }

    def in_progress(self) -> int:
        with self._lock:
            return sum(e.status == "IN_PROGRESS" for e in self._live())

    def _live(self) -> list:
        now = self.now()
        for export_id, export in list(self.exports.items()):
            if now - export.create_time >= DELETED_AFTER:
                self._drop(export_id)  # Google deletes exports 15 days after creation
        return list(self.exports.values())

    def _drop(self, export_id: str, by_google: bool = True) -> None:
        export = self.exports.pop(export_id, None)
        if export is not None:
            for item in export.files:
                self.objects.pop(item["objectName"], None)
            if by_google:
                self.calls["deleted_by_google"] += 1

    # -- export content ---------------------------------------------------------
    def _complete(self, export: VaultExport) -> None:
        user = export.emails[0].split("@")[0]
        if self.fail_users[user] > 0:
            self.fail_users[user] -= 1
            export.status = "FAILED"
            return
        self.completed_at[export.id] = time.time()
        if self.archive_file is not None:
            self._serve_file(export, *self.archive_file)
            return
        files: dict = {}
        rows: list = []
        counts: dict = {}
        mboxes: list = []
        for account in export.emails:
            specs = self.specs_for(account, export.start, export.end)
            export.specs[account] = specs
            counts[account] = len(specs)
            share = max(1, self.mbox_files_per_export)
            for part in range(share):
                chunk = specs[part::share]
                mbox_name = f"{account}-{part}.mbox" if share > 1 else f"{account}.mbox"
                mboxes.append((mbox_name, corpus.mbox(chunk, export.create_time)))
                rows += [
                    {
                        "file": mbox_name,
                        "message_id": f"<{s.message_id}>",
                        "account": account,
                        "labels": s.labels,
                        "thread_id": s.thread_id,
                        "subject": s.subject,
                    }
                    for s in chunk
                ]
        for number, mbox in enumerate(mboxes, start=1):
            # a comment no member CRC covers: a byte changed in it changes only the MD5
            data = archive.mbox_zip([mbox], form=self.form, comment=b"vault-sim " * 4)
            if user in self.damaged:
                middle = len(data) // 2
                data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
            if user in self.huge_directory:
                end = data.rfind(b"PK\x05\x06")  # the end record's directory size field
                data = data[: end + 12] + (3 << 30).to_bytes(4, "little") + data[end + 16 :]
            files[f"{export.name}-{number}.zip"] = data
        files[f"{export.name}-metadata.xml"] = archive.metadata_xml(export.name, rows)
        files[f"{export.name}-results-count.csv"] = archive.results_count_csv(counts)
        files[f"{export.name}-checksums.md5"] = archive.checksums(files)
        self.completed_specs[export.id] = export.specs
        export.exported = sum(counts.values())
        for name, data in files.items():
            object_name = f"{export.id}/{name}"
            listed_size = len(data)
            if user in self.truncated and name.endswith(".zip"):
                data = data[: len(data) * 2 // 3]  # stored cut short; Vault lists the full size
            self.objects[object_name] = data
            export.files.append(
                {
                    "bucketName": BUCKET,
                    "objectName": object_name,
                    "size": str(listed_size),
                    "md5Hash": hashlib.md5(  # noqa: S324 (Vault's checksum)
                        files[name]
                    ).hexdigest(),
                }
            )
        export.size = sum(int(f["size"]) for f in export.files)
        export.status = "COMPLETED"

    def _serve_file(self, export: VaultExport, path: str, md5_hex: str) -> None:
        """The export's one zip is the file at `path` (the benchmark's large archives:
        read from disk as served, never held in memory)."""
        object_name = f"{export.id}/{export.name}-1.zip"
        self.objects[object_name] = path
        size = os.path.getsize(path)
        export.files = [
            {"bucketName": BUCKET, "objectName": object_name, "size": str(size), "md5Hash": md5_hex}
        ]
        export.size = size
        export.status = "COMPLETED"

    def _revoke(self, headers) -> None:
        """The token of a request is revoked (answered 401 by the caller)."""
        self.calls["revoked"] += 1
        self.tokens.pop(headers.get("Authorization", "")[len("Bearer ") :], None)
        if self.refuse_renewal:
            self.refuse_renewal = False
            self.token_refusals += 1

    # -- quotas -------------------------------------------------------------------
    def _charge(self, reads: int, writes: int) -> bool:
        """Spend per-minute quota; False (nothing spent) when it would exceed."""
        if not self.enforce_rate_quota:
            return True
        minute = int(self.clock() // 60)
        if (
            self.quota_used[(minute, "read")] + reads > EXPORT_READS_PER_MINUTE
            or self.quota_used[(minute, "write")] + writes > EXPORT_WRITES_PER_MINUTE
        ):
            return False
        self.quota_used[(minute, "read")] += reads
        self.quota_used[(minute, "write")] += writes
        return True

    # -- HTTP ---------------------------------------------------------------------
    def _handler(self):
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _json(self, status: int, payload: dict, headers: Optional[dict] = None) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def _error(self, code: int, status: str, message: str, headers=None) -> None:
                self._json(
                    code, {"error": {"code": code, "message": message, "status": status}}, headers
                )

            def _quota(self) -> None:
                sim.calls["429"] += 1
                self._error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Quota exceeded for quota metric 'Export writes' and limit 'Export "
                    "writes per minute per project'",
                    {"Retry-After": "30"},
                )

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _scopes(self) -> Optional[frozenset]:
                value = self.headers.get("Authorization", "")
                token = value[7:] if value.startswith("Bearer ") else ""
                with sim._lock:
                    expiry, scopes = sim.tokens.get(token, (0.0, frozenset()))
                if expiry < sim.clock():
                    self._error(
                        401, "UNAUTHENTICATED", "Request had invalid authentication credentials."
                    )
                    return None
                return scopes

            def _allowed(self, scope: str) -> bool:
                scopes = self._scopes()
                if scopes is None:
                    return False
                if scope not in scopes:
                    self._error(
                        403, "PERMISSION_DENIED", "Request had insufficient authentication scopes."
                    )
                    return False
                return True

            def do_POST(self) -> None:
                path = urlsplit(self.path).path
                body = self._body()
                if path == "/token":
                    return self._token(body)
                if not self._allowed(EDISCOVERY):
                    return None
                parts = path.strip("/").split("/")
                try:
                    payload = json.loads(body or b"{}")
                except ValueError:
                    return self._error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
                if parts == ["v1", "matters"]:
                    return self._create_matter(payload)
                if len(parts) == 4 and parts[:2] == ["v1", "matters"] and parts[3] == "exports":
                    return self._create_export(parts[2], payload)
                return self._error(404, "NOT_FOUND", "Requested entity was not found.")

            def do_GET(self) -> None:
                split = urlsplit(self.path)
                parts = split.path.strip("/").split("/")
                query = parse_qs(split.query)
                if parts[:3] == ["storage", "v1", "b"] and len(parts) == 6 and parts[4] == "o":
                    if not self._allowed(STORAGE_READ):
                        return None
                    return self._media(unquote(parts[3]), unquote(parts[5]), query)
                if not self._allowed(EDISCOVERY):
                    return None
                if parts == ["v1", "matters"]:
                    return self._list_matters(query)
                if parts[:2] == ["v1", "matters"] and len(parts) == 3:
                    return self._get_matter(parts[2])
                if parts[:2] == ["v1", "matters"] and len(parts) >= 4 and parts[3] == "exports":
                    if len(parts) == 4:
                        return self._list(parts[2], query)
                    if len(parts) == 5:
                        return self._get_export(parts[2], parts[4])
                return self._error(404, "NOT_FOUND", "Requested entity was not found.")

            def do_DELETE(self) -> None:
                parts = urlsplit(self.path).path.strip("/").split("/")
                if not self._allowed(EDISCOVERY):
                    return None
                if len(parts) == 5 and parts[:2] == ["v1", "matters"] and parts[3] == "exports":
                    return self._delete(parts[2], parts[4])
                return self._error(404, "NOT_FOUND", "Requested entity was not found.")

            # -- endpoints ------------------------------------------------------
            def _token(self, body: bytes) -> None:
                form = parse_qs(body.decode())
                sim.calls["token"] += 1
                with sim._lock:
                    refuse = sim.token_refusals > 0
                    sim.token_refusals -= refuse
                if refuse:
                    return self._json(
                        400, {"error": "invalid_grant", "error_description": "Invalid grant."}
                    )
                if form.get("grant_type") != [GRANT_TYPE]:
                    return self._json(400, {"error": "unsupported_grant_type"})
                problem, scopes = check_assertion(
                    (form.get("assertion") or [""])[0],
                    public_key=sim._sa_public,
                    issuer=sim.client_email,
                    audience=sim.token_url,
                    subject=sim.admin,
                    granted_scopes=sim.granted_scopes,
                    now=sim.clock(),
                )
                if problem:
                    error, _, description = problem.partition(": ")
                    return self._json(400, {"error": error, "error_description": description})
                token = secrets.token_urlsafe(32)
                with sim._lock:
                    sim.tokens[token] = (sim.clock() + 3600, scopes)
                return self._json(
                    200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}
                )

            def _create_matter(self, payload: dict) -> None:
                if not str(payload.get("name") or "").strip():
                    return self._error(400, "INVALID_ARGUMENT", "Matter name is required.")
                with sim._lock:
                    sim.calls["create_matter"] += 1
                    matter_id = f"m{sim._next:06d}-{secrets.token_hex(4)}"
                    sim._next += 1
                    matter = {
                        "matterId": matter_id,
                        "name": payload["name"],
                        "description": payload.get("description", ""),
                        "state": "OPEN",
                    }
                    sim.matters[matter_id] = matter
                return self._json(200, matter)

            def _get_matter(self, matter_id: str) -> None:
                with sim._lock:
                    matter = sim.matters.get(matter_id)
                    sim.calls["get_matter"] += 1
                if matter is None:
                    return self._error(404, "NOT_FOUND", "Requested entity was not found.")
                return self._json(200, matter)

            def _list_matters(self, query: dict) -> None:
                state = (query.get("state") or [None])[0]
                with sim._lock:
                    sim.calls["list_matters"] += 1
                    found = [m for m in sim.matters.values() if state in (None, m["state"])]
                return self._page(found, query, "matters")

            def _page(self, items: list, query: dict, key: str) -> None:
                size = int((query.get("pageSize") or [DEFAULT_PAGE_SIZE])[0])
                size = max(1, min(size, sim.page_size_cap))
                start = int((query.get("pageToken") or ["0"])[0] or 0)
                answer: dict = {key: items[start : start + size]}
                if start + size < len(items):
                    answer["nextPageToken"] = str(start + size)
                return self._json(200, answer)

            def _open_matter(self, matter_id: str) -> bool:
                matter = sim.matters.get(matter_id)
                if matter is None:
                    self._error(404, "NOT_FOUND", "Requested entity was not found.")
                    return False
                if matter["state"] != "OPEN":
                    self._error(
                        400, "FAILED_PRECONDITION", f"Matter is {matter['state']}, not OPEN."
                    )
                    return False
                return True

            def _create_export(self, matter_id: str, payload: dict) -> None:
                with sim._lock:
                    if not self._open_matter(matter_id):
                        return None
                    problem = _check_export_body(payload)
                    if problem:
                        return self._error(400, "INVALID_ARGUMENT", problem)
                    if sim.quota_429 > 0:
                        sim.quota_429 -= 1
                        return self._quota()
                    if not sim._charge(1, CREATE_WRITE_COST):
                        return self._quota()
                    if sim.in_progress() >= sim.in_progress_limit:
                        sim.calls["ceiling_refused"] += 1
                        return self._error(
                            429,
                            "RESOURCE_EXHAUSTED",
                            "You can have no more than 20 exports in progress across your "
                            "organization.",
                            {"Retry-After": "60"},
                        )
                    query = payload["query"]
                    export = VaultExport(
                        id=f"exportly-{secrets.token_hex(6)}",
                        matter_id=matter_id,
                        name=payload["name"],
                        body=payload,
                        emails=list(query["accountInfo"]["emails"]),
                        start=midnight(parse_rfc3339(query["startTime"])),
                        end=midnight(parse_rfc3339(query["endTime"])),
                        create_time=sim.now(),
                        polls_left=sim.polls_until_done,
                    )
                    sim.exports[export.id] = export
                    sim.calls["create"] += 1
                    sim.creates_by_name[export.name] += 1
                    sim.creates_by_matter[matter_id] += 1
                    sim.peak_in_progress = max(sim.peak_in_progress, sim.in_progress())
                    if sim.lose_create_answer > 0:
                        sim.lose_create_answer -= 1
                        self.close_connection = True
                        return None  # made, but the answer never leaves
                    return self._json(200, export.resource())

            def _list(self, matter_id: str, query: dict) -> None:
                with sim._lock:
                    if matter_id not in sim.matters:
                        return self._error(404, "NOT_FOUND", "Requested entity was not found.")
                    if not sim._charge(1, 0):
                        return self._quota()
                    sim.calls["list"] += 1
                    mine = [e.resource() for e in sim._live() if e.matter_id == matter_id]
                    return self._page(mine, query, "exports")

            def _get_export(self, matter_id: str, export_id: str) -> None:
                with sim._lock:
                    if sim.revoke_on_get > 0:
                        sim.revoke_on_get -= 1
                        sim._revoke(self.headers)
                        return self._error(
                            401,
                            "UNAUTHENTICATED",
                            "Request had invalid authentication credentials.",
                        )
                    sim._live()
                    export = sim.exports.get(export_id)
                    if export is None or export.matter_id != matter_id:
                        return self._error(404, "NOT_FOUND", "Requested entity was not found.")
                    if not sim._charge(1, 0):
                        return self._quota()
                    sim.calls["get"] += 1
                    if export.status == "IN_PROGRESS":
                        export.polls_left -= 1
                        if export.polls_left < 0:
                            sim._complete(export)
                    resource = export.resource()
                    user = export.emails[0].split("@")[0]
                    if export.status == "COMPLETED" and sim.no_sink[user] > 0:
                        sim.no_sink[user] -= 1
                        resource.pop("cloudStorageSink", None)
                    if export.status == "COMPLETED" and sim.wrong_md5[user] > 0:
                        sim.wrong_md5[user] -= 1
                        for item in resource["cloudStorageSink"]["files"]:
                            if item["objectName"].endswith(".zip"):
                                item["md5Hash"] = "0" * 32
                    return self._json(200, resource)

            def _delete(self, matter_id: str, export_id: str) -> None:
                with sim._lock:
                    export = sim.exports.get(export_id)
                    if export is None or export.matter_id != matter_id:
                        return self._error(404, "NOT_FOUND", "Requested entity was not found.")
                    if not sim._charge(0, 1):
                        return self._quota()
                    sim.calls["delete"] += 1
                    sim._drop(export_id, by_google=False)
                    return self._json(200, {})

            def _media(self, bucket: str, name: str, query: dict) -> None:
                with sim._lock:
                    sim.calls["media"] += 1
                    sim.range_requests.append((name, self.headers.get("Range")))
                    data = sim.objects.get(name) if bucket == BUCKET else None
                    burst = sim.bursts_5xx > 0
                    if burst:
                        sim.bursts_5xx -= 1
                    owner = sim.exports.get(name.split("/")[0])
                    user = owner.emails[0].split("@")[0] if owner else ""
                    whole = self.headers.get("Range") in (None, "bytes=0-")
                    drop = (
                        sim.drop_after.pop(user, None) if whole and name.endswith(".zip") else None
                    )
                    revoke = whole and sim.revoke_on_stream > 0
                    if revoke:
                        sim.revoke_on_stream -= 1
                        sim._revoke(self.headers)
                        self._error(
                            401,
                            "UNAUTHENTICATED",
                            "Request had invalid authentication credentials.",
                        )
                        return None
                if sim.storage_status is not None:
                    sim.calls["storage_refused"] += 1
                    return self._error(sim.storage_status, "PERMISSION_DENIED", "Access denied.")
                if query.get("alt") != ["media"]:
                    return self._error(400, "INVALID_ARGUMENT", "alt=media is required here.")
                if burst:
                    return self._error(503, "UNAVAILABLE", "Backend Error")
                if data is None:
                    return self._error(404, "NOT_FOUND", "No such object: " + quote(name))
                total = len(data) if isinstance(data, bytes) else os.path.getsize(data)
                first, last = 0, total - 1
                status = 200
                wanted = self.headers.get("Range")
                if wanted:
                    match = _RANGE.match(wanted.strip())
                    if match is None or (match[1] == "" and match[2] == ""):
                        return self._error(400, "INVALID_ARGUMENT", "Invalid Range header.")
                    if match[1] == "":
                        first = max(0, total - int(match[2]))
                    else:
                        first = int(match[1])
                        if match[2]:
                            last = min(int(match[2]), total - 1)
                    if first >= total or first > last:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{total}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return None
                    status = 206
                length = last - first + 1
                if status == 206 and sim.overlong_ranges:
                    # the headers announce the range asked for; the body runs on
                    self.send_response(status)
                    self.send_header("Content-Range", f"bytes {first}-{last}/{total}")
                    self.end_headers()
                    self.close_connection = True
                    self._send_range(name, data, first, total - first, None)
                    return None
                self.send_response(status)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(length))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {first}-{last}/{total}")
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                self._send_range(name, data, first, length, drop)
                return None

            def _send_range(
                self, name: str, data: ObjectData, first: int, length: int, drop: Optional[int]
            ) -> None:
                step = 64 << 10
                rate = sim.rate_bytes_per_s
                started = time.monotonic()
                sent = 0
                source = open(data, "rb") if isinstance(data, str) else None  # noqa: SIM115
                try:
                    if source is not None:
                        source.seek(first)
                    while sent < length:
                        size = min(step, length - sent)
                        if drop is not None and sent + size > drop:
                            self.wfile.write(_read(data, source, first + sent, max(0, drop - sent)))
                            self.wfile.flush()
                            self.close_connection = True
                            return  # the connection drops: fewer bytes than announced
                        if sim.on_media_chunk is not None:
                            sim.on_media_chunk(name, first + sent)
                        self.wfile.write(_read(data, source, first + sent, size))
                        sent += size
                        if rate:
                            ahead = sent / rate - (time.monotonic() - started)
                            if ahead > 0:
                                time.sleep(ahead)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                finally:
                    if source is not None:
                        source.close()

        return Handler


def _read(data: ObjectData, source, offset: int, size: int) -> bytes:
    if source is None:
        return data[offset : offset + size]  # type: ignore[index]
    return source.read(size)


def _check_export_body(payload: dict) -> Optional[str]:
    """What Vault refuses with 400 INVALID_ARGUMENT, for a mail export by account."""
    if not str(payload.get("name") or "").strip():
        return "Export name is required."
    query = payload.get("query") or {}
    if query.get("corpus") != "MAIL":
        return "query.corpus must be MAIL here."
    if query.get("method", query.get("searchMethod")) != "ACCOUNT":
        return "query.method must be ACCOUNT here."
    if query.get("dataScope", "ALL_DATA") not in ("ALL_DATA", "HELD_DATA", "UNPROCESSED_DATA"):
        return "Invalid query.dataScope."
    emails = (query.get("accountInfo") or {}).get("emails") or []
    if not emails or not all(isinstance(e, str) and "@" in e for e in emails):
        return "query.accountInfo.emails must list account e-mail addresses."
    try:
        start = parse_rfc3339(query["startTime"])
        end = parse_rfc3339(query["endTime"])
    except (KeyError, ValueError, AttributeError):
        return "query.startTime and query.endTime must be RFC 3339 timestamps."
    if start >= end:
        return "query.startTime must be before query.endTime."
    options = (payload.get("exportOptions") or {}).get("mailOptions") or {}
    if options.get("exportFormat") != "MBOX":
        return "exportOptions.mailOptions.exportFormat must be MBOX here."
    if (payload.get("exportOptions") or {}).get("region", "ANY") not in ("ANY", "US", "EUROPE"):
        return "Invalid exportOptions.region."
    return None
