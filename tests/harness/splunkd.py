"""A splunkd stand-in: the REST endpoints TA_mailsec calls, served over HTTPS.

splunkd itself cannot be installed on the test machines. This module serves the
small part of its management API that the add-on reaches through splunklib
(splunk-sdk 2.1.1) and solnlib 7.0.0, answering with the same shapes splunkd
answers with, so that those libraries run unchanged against it:

endpoints (each under ``/services/`` and ``/servicesNS/<owner>/<app>/``):

* ``properties``, ``properties/<conf>[/<stanza>[/<key>]]``: solnlib's
  ``ConfManager.get_conf`` asks ``properties/<conf>`` (404 = no such conf file).
* ``configs/conf-<conf>[/<stanza>]``: list, read, create (``name=``), update,
  delete; ``ConfFile.get/get_all/update/delete``, ``service.confs``.
* ``storage/passwords[/<realm>:<user>:]``: ``CredentialManager`` and the
  decryption of ``******`` fields in ``ConfFile.get``.
* ``storage/collections/config[/<name>]``: ``service.kvstore``, which
  ``KVStoreCheckpointer`` uses to find or create its collection.
* ``storage/collections/data/<name>[/<key>|/batch_save|/batch_find]``: the
  records (``KVStoreCheckpointer`` get/update/batch_update/delete).
* ``server/info`` (``service.info``, ``service.splunk_version``) and
  ``/services/auth/login`` (``client.connect(username=..., password=...)``).

Formats, as splunkd: Atom XML (``<feed>``/``<entry>``/``<s:dict>``) unless the
request says ``output_mode=json``; KV-store *data* is always JSON; errors are
``<response><messages><msg type="ERROR">…</msg></messages></response>`` (JSON
``{"messages": [...]}`` with ``output_mode=json``). Every request needs
``Authorization: Splunk <session_key>``, as splunklib sends it; otherwise 401.

Quirks reproduced on purpose (each one matters to code written against it):

* An empty conf value is an empty XML element, which splunklib reads as ``None``.
* Conf stanzas carry ``disabled``, ``eai:acl``, ``eai:appName``, ``eai:userName``.
* A missing ``configs/conf-<conf>/<stanza>`` is 404; listing a conf file that does
  not exist answers an empty feed (``properties/<conf>`` is the 404 that tells).
* storage/passwords entry names are ``<realm>:<username>:`` with ``:`` inside the
  realm or username escaped as ``\\:``; the clear text comes back in
  ``clear_password``, ``password`` is ``********``.
* ``search=`` filters match case-insensitively on substrings (``*`` is a
  wildcard), ``field=value`` on one field: ``realm=X`` also matches ``X_more``.
* ``count`` defaults to 30 as in splunkd; ``count=0`` or ``-1`` lists everything.
* KV store: 404 for a missing key (solnlib's checkpointer turns that into
  ``None``); updating a missing key (``POST data/<c>/<key>``) is 404, use
  ``batch_save`` to upsert; more than 1000 documents in one ``batch_save`` is 400.
* Entity names are decoded with ``+`` meaning space (splunklib quotes names with
  ``quote_plus``), and the realm's ``/`` may arrive encoded or not (splunklib
  re-quotes entity paths taken from ``<link rel="alternate">`` without encoding
  ``/``): everything after ``storage/passwords/`` is the entry name.

Seeding and inspection without HTTP: :meth:`SplunkdStandIn.add_account`,
:meth:`~SplunkdStandIn.set_settings`, :meth:`~SplunkdStandIn.set_conf`,
:meth:`~SplunkdStandIn.add_input_secrets`, :meth:`~SplunkdStandIn.kv_records`,
:meth:`~SplunkdStandIn.passwords_raw`, :attr:`~SplunkdStandIn.requests_log`,
:meth:`~SplunkdStandIn.fail_next`. All data lives in one :class:`SplunkdState`,
which a second stand-in can reuse (``SplunkdStandIn(state=first.state)``) to
simulate a splunkd restart.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import hmac
import json
import os
import re
import secrets as _secrets
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, NamedTuple, NoReturn, Optional
from urllib.parse import parse_qs, quote, unquote, unquote_plus, urlsplit
from xml.sax.saxutils import escape, quoteattr

import requests
from solnlib.credentials import CredentialManager
from splunklib import client

from .certs import TestCA, TLSHTTPServer, server_ssl_context

__all__ = [
    "CRED_END_MARK",
    "CRED_SEP",
    "ENCRYPTED_PLACEHOLDER",
    "KV_BATCH_SAVE_LIMIT",
    "RequestRecord",
    "SplunkdStandIn",
    "SplunkdState",
    "credential_chunks",
    "credential_realm",
]

SPLUNK_VERSION = "9.3.2"
SPLUNK_BUILD = "d8bb32809498"

#: What UCC writes into the .conf file in place of an encrypted field.
ENCRYPTED_PLACEHOLDER = "******"
#: What splunkd shows in the ``password`` field of a storage/passwords entry.
MASKED_PASSWORD = "********"
#: splunkd's ``max_documents_per_batch_save`` default (limits.conf [kvstore]).
KV_BATCH_SAVE_LIMIT = 1000

# solnlib's chunking rules, taken from solnlib itself so the two cannot drift.
CRED_SEP = CredentialManager.SEP
CRED_END_MARK = CredentialManager.END_MARK
CRED_CHUNK = CredentialManager.SPLUNK_CRED_LEN_LIMIT

_ATOM_PREAMBLE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<!--This is to override browser formatting; see server.conf[httpServer] to disable."
    " . . . . . . . . . . . . . . . . . . . . . . . . . . . . . . . . . . . . . .-->\n"
    '<?xml-stylesheet type="text/xml" href="/static/atom.xsl"?>\n'
)
_FEED_OPEN = (
    '<feed xmlns="http://www.w3.org/2005/Atom" xmlns:s="http://dev.splunk.com/ns/rest"'
    ' xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">'
)


def credential_realm(app: str, endpoint: str) -> str:
    """The storage/passwords realm UCC uses for *endpoint*, for example
    ``credential_realm("TA_mailsec", "configs/conf-ta_mailsec_ser_account")``."""
    return f"__REST_CREDENTIAL__#{app}#{endpoint}"


def credential_chunks(username: str, password: str) -> list[tuple[str, str]]:
    """(username, password) pairs exactly as solnlib's ``CredentialManager.set_password``
    writes them: 255-character chunks under ``<user>``splunk_cred_sep``<n>`` (n from
    1), then one more entry holding the end marker."""
    pairs = []
    index = 1
    for start in range(0, len(password), CRED_CHUNK):
        pairs.append((f"{username}{CRED_SEP}{index}", password[start : start + CRED_CHUNK]))
        index += 1
    pairs.append((f"{username}{CRED_SEP}{index}", CRED_END_MARK))
    return pairs


def _escape_colon(text: str) -> str:
    return text.replace(":", "\\:")


def _conf_str(value: Any) -> str:
    """A value as splunkd stores it in a .conf file: always a string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


# ---------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------


@dataclass
class PasswordEntry:
    realm: str
    username: str
    clear_password: str
    encr_password: str

    @property
    def name(self) -> str:
        return f"{_escape_colon(self.realm)}:{_escape_colon(self.username)}:"


@dataclass
class KVCollection:
    config: dict[str, str] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)


class SplunkdState:
    """Everything a stand-in serves: conf files, storage/passwords, KV store.

    All access goes through :attr:`lock`; pass the same state to a new
    :class:`SplunkdStandIn` to keep the data over a simulated restart.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.confs: dict[str, dict[str, dict[str, str]]] = {}
        self.passwords: dict[str, PasswordEntry] = {}
        self.collections: dict[str, KVCollection] = {}
        # Key for the fake (irreversible) encr_password values.
        self._encr_key = _secrets.token_bytes(16)

    # -- passwords ---------------------------------------------------------

    def fake_encrypt(self, clear: str) -> str:
        digest = hmac.new(self._encr_key, clear.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"$7${digest}"

    def put_password(self, realm: str, username: str, clear: str) -> PasswordEntry:
        entry = PasswordEntry(realm, username, clear, self.fake_encrypt(clear))
        with self.lock:
            self.passwords[entry.name] = entry
        return entry

    def remove_credential(self, realm: str, username: str) -> int:
        """Remove ``username`` and all its chunks in ``realm``; return how many."""
        chunk = re.compile(re.escape(username + CRED_SEP) + r"\d+\Z")
        with self.lock:
            doomed = [
                name
                for name, e in self.passwords.items()
                if e.realm == realm and (e.username == username or chunk.match(e.username))
            ]
            for name in doomed:
                del self.passwords[name]
        return len(doomed)

    def store_credential(self, realm: str, username: str, password: str) -> None:
        """Store *password* chunked exactly as solnlib's CredentialManager does."""
        with self.lock:
            self.remove_credential(realm, username)
            for user, chunk in credential_chunks(username, password):
                self.put_password(realm, user, chunk)

    def read_credential(self, realm: str, username: str) -> Optional[str]:
        """Reassemble a chunked credential the way solnlib reads it (None if absent)."""
        pattern = re.compile(re.escape(username + CRED_SEP) + r"(\d+)\Z")
        chunks: dict[int, str] = {}
        plain = None
        with self.lock:
            for e in self.passwords.values():
                if e.realm != realm:
                    continue
                m = pattern.match(e.username)
                if m:
                    chunks[int(m.group(1))] = e.clear_password
                elif e.username == username:
                    plain = e.clear_password
        if not chunks:
            return plain
        out = []
        for index in sorted(chunks):
            if chunks[index] == CRED_END_MARK:
                break
            out.append(chunks[index])
        return "".join(out)

    # -- confs -------------------------------------------------------------

    def ensure_conf(self, conf: str) -> dict[str, dict[str, str]]:
        with self.lock:
            return self.confs.setdefault(conf, {})

    def stanza_view(self, conf: str, stanza: str) -> dict[str, str]:
        """A stanza as splunkd serves it: ``[default]`` values under its own."""
        with self.lock:
            stanzas = self.confs.get(conf, {})
            merged = dict(stanzas.get("default", {})) if stanza != "default" else {}
            merged.update(stanzas[stanza])
        return merged


# ---------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------


class RequestRecord(NamedTuple):
    """One request as the stand-in saw it (never the body: it may hold secrets)."""

    method: str
    path: str  # percent-decoded
    query: dict[str, Any]  # one value per name, a list when repeated


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, msg_type: str = "ERROR") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.msg_type = msg_type


@dataclass
class _Request:
    method: str
    path: str  # raw (still percent-encoded) path
    rel: str  # raw path below /services/ or /servicesNS/<owner>/<app>/
    query: dict[str, list[str]]
    body: bytes
    headers: Mapping[str, str]
    form: dict[str, list[str]] = field(default_factory=dict)

    @property
    def output_mode(self) -> str:
        values = self.query.get("output_mode") or self.form.get("output_mode") or ["xml"]
        return values[-1].lower()

    def q(self, name: str, default: Optional[str] = None) -> Optional[str]:
        values = self.query.get(name)
        return values[-1] if values else default

    def fields(self) -> dict[str, str]:
        """Form fields of a POST (last value wins), without request options."""
        return {k: v[-1] for k, v in self.form.items() if k != "output_mode"}

    def json_body(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _HTTPError(400, "Request body must be valid JSON") from None


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "text/xml; charset=UTF-8"


@dataclass
class _FailRule:
    prefix: str
    status: int
    remaining: int
    method: Optional[str]
    message: Optional[str]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections end after this

    def _dispatch(self) -> None:
        standin: SplunkdStandIn = self.server.standin  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        response = standin._handle(self.command, self.path, self.headers, body)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store, max-age=0, must-revalidate, no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        # Say whether the connection stays open, as splunkd does. splunklib's own
        # http.client handler sends "Connection: Close" and closes its connection
        # right after reading the headers: unless the answer says Close too,
        # http.client drops the unread body with the connection.
        if self.close_connection:
            self.send_header("Connection", "Close")
        else:
            self.send_header("Connection", "Keep-Alive")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_DELETE = do_PUT = do_HEAD = _dispatch

    def version_string(self) -> str:
        return "Splunkd"

    def log_message(self, format, *args):
        pass  # the stand-in keeps its own request log


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def _xml_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Mapping):
        keys = "".join(
            f"<s:key name={quoteattr(str(k))}>{_xml_value(v)}</s:key>" for k, v in value.items()
        )
        return f"<s:dict>{keys}</s:dict>"
    if isinstance(value, (list, tuple)):
        items = "".join(f"<s:item>{_xml_value(v)}</s:item>" for v in value)
        return f"<s:list>{items}</s:list>"
    return escape(str(value))


@dataclass
class _Entry:
    title: str
    path: str  # relative, percent-encoded, for links: "configs/conf-x/acct1"
    content: dict[str, Any]
    acl: Optional[dict[str, Any]] = None
    actions: tuple[str, ...] = ("list", "edit", "remove")
    text_content: Optional[str] = None  # properties/<conf>/<stanza>: one key's value


def _acl(app: str, owner: str = "nobody", sharing: str = "app") -> dict[str, Any]:
    return {
        "app": app,
        "can_change_perms": "1",
        "can_list": "1",
        "can_share_app": "1",
        "can_share_global": "1",
        "can_share_user": "0",
        "can_write": "1",
        "modifiable": "1",
        "owner": owner,
        "perms": {"read": ["*"], "write": ["admin", "sc_admin"]},
        "removable": "0",
        "sharing": sharing,
    }


# ---------------------------------------------------------------------------
# The stand-in
# ---------------------------------------------------------------------------


class SplunkdStandIn:
    """A splunkd stand-in on ``https://127.0.0.1:<random port>``.

    Use as a context manager (or ``start()`` / ``stop()``)::

        with SplunkdStandIn() as splunkd:
            splunkd.add_account("ser_account", "acct1", {...}, encrypted=["client_secret"])
            cfm = ConfManager(splunkd.session_key, "TA_mailsec", realm=...,
                              scheme=splunkd.scheme, host=splunkd.host, port=splunkd.port)
    """

    scheme = "https"
    host = "127.0.0.1"

    def __init__(
        self,
        app: str = "TA_mailsec",
        *,
        state: Optional[SplunkdState] = None,
        port: int = 0,
        session_key: Optional[str] = None,
        users: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.app = app
        self.state = state if state is not None else SplunkdState()
        self.session_key = session_key or _secrets.token_urlsafe(32)
        #: username -> password accepted by ``/services/auth/login``
        self.users = dict(users or {"admin": "changeme"})
        self.requests_log: list[RequestRecord] = []
        #: (realm, username) of every storage/passwords entry sent to a client, in order
        self.passwords_served: list[tuple[str, str]] = []
        self.unexpected_requests: list[RequestRecord] = []
        #: exceptions raised inside the stand-in (each answered with a 500)
        self.errors: list[BaseException] = []
        self._fail_rules: list[_FailRule] = []
        self._rules_lock = threading.Lock()
        self._requested_port = port
        self._server: Optional[TLSHTTPServer] = None
        self._tmpdir: Optional[str] = None
        self.ca = TestCA.create("splunkd stand-in CA")
        self.server_cert = self.ca.issue_server(("127.0.0.1", "localhost"))

    # -- lifecycle ---------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the splunkd stand-in is not running")
        return self._server.port

    @property
    def server_uri(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def location(self) -> dict[str, Any]:
        """``scheme``, ``host`` and ``port`` as keyword arguments for solnlib
        (``ConfManager(key, app, realm=..., **splunkd.location)``) and splunklib."""
        return {"scheme": self.scheme, "host": self.host, "port": self.port}

    def service(self, **kwargs: Any) -> client.Service:
        """A splunklib ``Service`` bound to the stand-in (app and owner ``nobody``)."""
        kwargs.setdefault("app", self.app)
        kwargs.setdefault("owner", "nobody")
        kwargs.setdefault("token", self.session_key)
        return client.Service(**self.location, **kwargs)

    @property
    def ca_file(self) -> str:
        """Path of the stand-in's CA certificate, to verify it (``verify=``)."""
        if self._tmpdir is None:
            raise RuntimeError("the splunkd stand-in is not running")
        return os.path.join(self._tmpdir, "splunkd-ca.pem")

    def request(
        self, method: str, path: str, *, auth: bool = True, **kwargs: Any
    ) -> requests.Response:
        """A raw HTTPS call for tests: *path* is absolute (``/services/...``) or
        relative to ``/servicesNS/nobody/<app>/``; the session key is sent unless
        ``auth=False`` (or an ``Authorization`` header is given); verified with
        :attr:`ca_file`."""
        url = self.server_uri + (path if path.startswith("/") else self._href(path))
        headers = dict(kwargs.pop("headers", None) or {})
        if auth:
            headers.setdefault("Authorization", f"Splunk {self.session_key}")
        timeout = kwargs.pop("timeout", 10)
        return requests.request(
            method, url, headers=headers, verify=self.ca_file, timeout=timeout, **kwargs
        )

    @property
    def conf_prefix(self) -> str:
        """Prefix of the add-on's UCC conf files: ``ta_mailsec``."""
        return self.app.lower()

    def start(self) -> SplunkdStandIn:
        if self._server is not None:
            return self
        server = TLSHTTPServer(
            (self.host, self._requested_port), _Handler, server_ssl_context(self.server_cert)
        )
        server.standin = self  # type: ignore[attr-defined]
        self._tmpdir = tempfile.mkdtemp(prefix="splunkd_standin_")
        self.ca.write(self._tmpdir, "splunkd-ca")
        self._server = server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> SplunkdStandIn:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- seeding and inspection --------------------------------------------

    def conf_name(self, tab: str) -> str:
        """The conf file of a UCC tab: ``ser_account`` -> ``ta_mailsec_ser_account``."""
        return f"{self.conf_prefix}_{tab}"

    def conf_realm(self, conf: str) -> str:
        """The storage/passwords realm of a UCC conf file's encrypted fields."""
        return credential_realm(self.app, f"configs/conf-{conf}")

    def input_realm(self, input_type: str) -> str:
        """The storage/passwords realm of an input type's encrypted fields."""
        return credential_realm(self.app, f"data/inputs/{input_type}")

    def _store_ucc_stanza(
        self,
        conf: str,
        stanza: str,
        fields: Mapping[str, Any],
        encrypted: Iterable[str],
    ) -> None:
        # As splunktaucclib's RestCredentials.encrypt_for_create: every non-empty
        # encrypted field goes into ONE JSON object in storage/passwords (username =
        # stanza, chunked like CredentialManager) and reads "******" in the conf; an
        # empty encrypted field stays empty in the conf and is left out of the JSON.
        values = {k: _conf_str(v) for k, v in fields.items()}
        secret_values = {}
        for name in encrypted:
            if values.get(name):
                secret_values[name] = values[name]
                values[name] = ENCRYPTED_PLACEHOLDER
        realm = self.conf_realm(conf)
        with self.state.lock:
            self.state.ensure_conf(conf)[stanza] = values
            self.state.remove_credential(realm, stanza)
            if secret_values:
                self.state.store_credential(realm, stanza, json.dumps(secret_values))

    def add_account(
        self,
        tab: str,
        name: str,
        fields: Mapping[str, Any],
        encrypted: Iterable[str] = (),
    ) -> None:
        """Store a UCC account as the add-on's REST handler would: conf
        ``ta_mailsec_<tab>``, stanza *name*, encrypted fields in storage/passwords
        (realm ``__REST_CREDENTIAL__#TA_mailsec#configs/conf-ta_mailsec_<tab>``)."""
        self._store_ucc_stanza(self.conf_name(tab), name, fields, encrypted)

    def set_settings(
        self, stanza: str, fields: Mapping[str, Any], encrypted: Iterable[str] = ()
    ) -> None:
        """Store a settings stanza (``proxy``, ``logging``) in ``ta_mailsec_settings``,
        encrypted fields (``proxy_password``) in storage/passwords as UCC does."""
        self._store_ucc_stanza(self.conf_name("settings"), stanza, fields, encrypted)

    def set_conf(self, conf: str, stanza: str, fields: Mapping[str, Any]) -> None:
        """Create or replace one stanza of a conf file (values become strings)."""
        with self.state.lock:
            self.state.ensure_conf(conf)[stanza] = {k: _conf_str(v) for k, v in fields.items()}

    def ensure_conf(self, conf: str) -> None:
        """Make *conf* exist (as a file the app ships), even without stanzas."""
        self.state.ensure_conf(conf)

    def get_conf(self, conf: str) -> dict[str, dict[str, str]]:
        """A copy of a conf file's stanzas as stored ({} when the file is missing)."""
        with self.state.lock:
            return copy.deepcopy(self.state.confs.get(conf, {}))

    def add_input_secrets(
        self, input_type: str, input_name: str, secrets: Mapping[str, Any]
    ) -> None:
        """Store an input's encrypted fields as UCC does: realm
        ``__REST_CREDENTIAL__#TA_mailsec#data/inputs/<input_type>``, username the
        input's name, password the JSON of the non-empty fields, chunked."""
        realm = self.input_realm(input_type)
        values = {k: _conf_str(v) for k, v in secrets.items() if _conf_str(v)}
        with self.state.lock:
            self.state.remove_credential(realm, input_name)
            if values:
                self.state.store_credential(realm, input_name, json.dumps(values))

    def set_password(self, realm: str, username: str, password: str) -> None:
        """Store a credential chunked as solnlib's CredentialManager stores it."""
        self.state.store_credential(realm, username, password)

    def get_password(self, realm: str, username: str) -> Optional[str]:
        """Read a credential back as solnlib does (None when absent)."""
        return self.state.read_credential(realm, username)

    def passwords_raw(self) -> list[dict[str, str]]:
        """Every storage/passwords entry, clear text included, for secret scans."""
        with self.state.lock:
            return [
                {
                    "name": e.name,
                    "realm": e.realm,
                    "username": e.username,
                    "clear_password": e.clear_password,
                    "encr_password": e.encr_password,
                }
                for e in self.state.passwords.values()
            ]

    def ensure_collection(self, name: str, fields: Optional[Mapping[str, str]] = None) -> None:
        """Declare a KV-store collection (as ``collections.conf`` would)."""
        with self.state.lock:
            coll = self.state.collections.setdefault(name, KVCollection())
            for key, kind in (fields or {}).items():
                coll.config[f"field.{key}"] = kind

    def kv_records(self, collection: str) -> dict[str, dict[str, Any]]:
        """A copy of a collection's records by ``_key`` ({} when it does not exist)."""
        with self.state.lock:
            coll = self.state.collections.get(collection)
            return copy.deepcopy(coll.records) if coll else {}

    def kv_put(self, collection: str, record: Mapping[str, Any]) -> str:
        """Insert or replace a record (creating the collection); returns its key."""
        with self.state.lock:
            coll = self.state.collections.setdefault(collection, KVCollection())
            return self._kv_save(coll, dict(record))

    def kv_checkpoint(self, collection: str, key: str) -> Any:
        """The state solnlib's KVStoreCheckpointer stored under *key* (None if absent)."""
        record = self.kv_records(collection).get(key)
        return None if record is None else json.loads(record["state"])

    def fail_next(
        self,
        path_prefix: str,
        status: int,
        times: int = 1,
        *,
        method: Optional[str] = None,
        message: Optional[str] = None,
    ) -> None:
        """Answer the next *times* matching requests with *status* and an error body.

        *path_prefix* is matched against the decoded path below the namespace
        (``storage/collections/data/ta_mailsec_checkpoints``) or, when it starts
        with ``/``, against the whole decoded path. Rules apply in the order given.

        Mind the clients' own retries: solnlib's KV-store client (a pooled requests
        session) retries 500/502/503/504 five times inside urllib3, and solnlib's
        ``@retry`` runs each call up to four times, so one ``KVStoreCheckpointer``
        call makes up to 24 requests before a 503 surfaces.
        """
        with self._rules_lock:
            self._fail_rules.append(
                _FailRule(path_prefix, status, times, method.upper() if method else None, message)
            )

    def clear_log(self) -> None:
        self.requests_log.clear()
        self.passwords_served.clear()
        self.unexpected_requests.clear()

    # -- request handling --------------------------------------------------

    _NS_RE = re.compile(r"^/servicesNS/([^/]+)/([^/]+)/(.*)$|^/services/(.*)$", re.DOTALL)

    def _handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes):
        split = urlsplit(target)
        raw_path = split.path
        query = parse_qs(split.query, keep_blank_values=True)
        record = RequestRecord(
            method,
            unquote(raw_path),
            {k: v[0] if len(v) == 1 else v for k, v in query.items()},
        )
        self.requests_log.append(record)
        m = self._NS_RE.match(raw_path)
        rel = (m.group(3) if m.group(3) is not None else m.group(4)) if m else None
        req = _Request(method, raw_path, (rel or "").rstrip("/"), query, body, headers)
        ctype = (headers.get("Content-Type") or "").lower()
        if method in ("POST", "PUT") and (not ctype or "x-www-form-urlencoded" in ctype):
            req.form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        try:
            if rel is not None and req.rel == "auth/login" and method == "POST":
                return self._auth_login(req)
            if headers.get("Authorization") != f"Splunk {self.session_key}":
                raise _HTTPError(401, "call not properly authenticated", "WARN")
            self._apply_fail_rules(req)
            response = None
            if rel is not None:
                with self.state.lock:
                    response = self._route(req)
            if response is None:
                self.unexpected_requests.append(record)
                raise _HTTPError(404, "Not Found")
            return response
        except _HTTPError as err:
            if err.status == 405:  # a known endpoint, but not a call splunkd serves
                self.unexpected_requests.append(record)
            return self._error(req, err)
        except Exception as exc:  # a bug in the stand-in: answer, and keep it for tests
            self.errors.append(exc)
            return self._error(req, _HTTPError(500, f"splunkd stand-in error: {exc!r}"))

    def _apply_fail_rules(self, req: _Request) -> None:
        decoded_rel = unquote_plus(req.rel)
        decoded_full = unquote(req.path)
        with self._rules_lock:
            for rule in self._fail_rules:
                target = decoded_full if rule.prefix.startswith("/") else decoded_rel
                if rule.remaining <= 0 or not target.startswith(rule.prefix):
                    continue
                if rule.method and rule.method != req.method:
                    continue
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._fail_rules.remove(rule)  # safe: the loop ends here
                message = rule.message or self._default_failure_message(decoded_rel, rule.status)
                raise _HTTPError(rule.status, message)

    @staticmethod
    def _default_failure_message(rel: str, status: int) -> str:
        if status == 503 and rel.startswith("storage/collections"):
            return "KV Store is initializing. Please try again later."
        return {
            500: "Internal Server Error",
            502: "Bad Gateway",
            503: "Service Unavailable",
            504: "Gateway Timeout",
            429: "Too Many Requests",
            403: "Forbidden",
        }.get(status, "Injected failure")

    def _route(self, req: _Request) -> Optional[_Response]:
        rel, method = req.rel, req.method
        parts = rel.split("/") if rel else []
        if rel == "server/info" and method == "GET":
            return self._server_info(req)
        if parts[:1] == ["properties"]:
            return self._properties(req, [unquote_plus(p) for p in parts[1:]])
        if len(parts) >= 2 and parts[0] == "configs" and parts[1].startswith("conf-"):
            conf = unquote_plus(parts[1][len("conf-") :])
            rest = [unquote_plus(p) for p in parts[2:]]
            return self._configs(req, conf, rest)
        if parts[:2] == ["storage", "passwords"]:
            # Everything after the prefix is the name: realms hold "/" and splunklib
            # does not always encode it.
            name = unquote_plus(rel[len("storage/passwords/") :]) if len(parts) > 2 else None
            return self._passwords(req, name)
        if parts[:3] == ["storage", "collections", "config"]:
            return self._kv_config(req, [unquote_plus(p) for p in parts[3:]])
        if parts[:3] == ["storage", "collections", "data"] and len(parts) > 3:
            return self._kv_data(req, unquote_plus(parts[3]), [unquote_plus(p) for p in parts[4:]])
        return None

    # -- responses ---------------------------------------------------------

    def _error(self, req: _Request, err: _HTTPError) -> _Response:
        if req.output_mode == "json":
            body = json.dumps({"messages": [{"type": err.msg_type, "text": err.message}]})
            return _Response(err.status, body.encode(), "application/json; charset=UTF-8")
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<response>\n  <messages>\n'
            f"    <msg type={quoteattr(err.msg_type)}>{escape(err.message)}</msg>\n"
            "  </messages>\n</response>\n"
        )
        return _Response(err.status, xml.encode("utf-8"))

    def _href(self, rel_path: str) -> str:
        return f"/servicesNS/nobody/{quote(self.app, safe='')}/{rel_path}"

    def _feed(
        self,
        req: _Request,
        title: str,
        coll_path: str,
        entries: list[_Entry],
        status: int = 200,
        paginate: bool = True,
    ) -> _Response:
        total = len(entries)
        count = 30
        offset = 0
        if paginate:
            try:
                count = int(req.q("count", "30") or 30)
                offset = max(int(req.q("offset", "0") or 0), 0)
            except ValueError:
                raise _HTTPError(400, "Argument count and offset must be integers") from None
            if req.q("sort_dir", "asc") == "desc":
                entries = list(reversed(entries))
            entries = entries[offset:] if count <= 0 else entries[offset : offset + count]
        if req.output_mode == "json":
            return self._feed_json(title, coll_path, entries, total, count, offset, status)
        return self._feed_atom(title, coll_path, entries, total, count, offset, status)

    def _feed_atom(self, title, coll_path, entries, total, count, offset, status) -> _Response:
        updated = _now_iso()
        out = [_ATOM_PREAMBLE, _FEED_OPEN]
        out.append(f"<title>{escape(title)}</title>")
        out.append(f"<id>{escape(self.server_uri + self._href(coll_path))}</id>")
        out.append(f"<updated>{updated}</updated>")
        out.append(f'<generator build="{SPLUNK_BUILD}" version="{SPLUNK_VERSION}"/>')
        out.append("<author><name>Splunk</name></author>")
        for sub, rel in (("_new", "create"), ("_reload", "_reload"), ("_acl", "_acl")):
            href = quoteattr(self._href(f"{coll_path}/{sub}"))
            out.append(f"<link href={href} rel={quoteattr(rel)}/>")
        out.append(f"<opensearch:totalResults>{total}</opensearch:totalResults>")
        out.append(f"<opensearch:itemsPerPage>{count}</opensearch:itemsPerPage>")
        out.append(f"<opensearch:startIndex>{offset}</opensearch:startIndex>")
        out.append("<s:messages/>")
        for entry in entries:
            href = self._href(entry.path)
            out.append("<entry>")
            out.append(f"<title>{escape(entry.title)}</title>")
            out.append(f"<id>{escape(self.server_uri + href)}</id>")
            out.append(f"<updated>{updated}</updated>")
            out.append(f'<link href={quoteattr(href)} rel="alternate"/>')
            owner = (entry.acl or {}).get("owner", "nobody")
            out.append(f"<author><name>{escape(owner)}</name></author>")
            for action in entry.actions:
                link = href if action in ("list", "edit", "remove") else f"{href}/{action}"
                out.append(f"<link href={quoteattr(link)} rel={quoteattr(action)}/>")
            if entry.text_content is not None:
                out.append(f'<content type="text">{escape(entry.text_content)}</content>')
            else:
                content = dict(entry.content)
                if entry.acl is not None:
                    content["eai:acl"] = entry.acl
                out.append(f'<content type="text/xml">{_xml_value(content)}</content>')
            out.append("</entry>")
        out.append("</feed>\n")
        return _Response(status, "\n".join(out).encode("utf-8"))

    def _feed_json(self, title, coll_path, entries, total, count, offset, status) -> _Response:
        updated = _now_iso()
        doc = {
            "links": {"create": self._href(f"{coll_path}/_new")},
            "origin": self.server_uri + self._href(coll_path),
            "updated": updated,
            "generator": {"build": SPLUNK_BUILD, "version": SPLUNK_VERSION},
            "entry": [],
            "paging": {"total": total, "perPage": count, "offset": offset},
            "messages": [],
        }
        for entry in entries:
            href = self._href(entry.path)
            item: dict[str, Any] = {
                "name": entry.title,
                "id": self.server_uri + href,
                "updated": updated,
                "links": {"alternate": href, **{a: href for a in entry.actions}},
                "author": (entry.acl or {}).get("owner", "nobody"),
            }
            if entry.acl is not None:
                item["acl"] = _json_acl(entry.acl)
            if entry.text_content is not None:
                item["content"] = entry.text_content
            else:
                content = dict(entry.content)
                if "disabled" in content:
                    content["disabled"] = content["disabled"] in ("1", "true", True)
                item["content"] = content
            doc["entry"].append(item)
        body = json.dumps(doc).encode("utf-8")
        return _Response(status, body, "application/json; charset=UTF-8")

    def _kv_json(self, status: int, payload: Any) -> _Response:
        return _Response(status, json.dumps(payload).encode("utf-8"), "application/json")

    # -- search filter ------------------------------------------------------

    @staticmethod
    def _matches(search: Optional[str], entry: _Entry) -> bool:
        """splunkd's ``search=``: whitespace-separated terms, all must match; a term
        is ``value`` (any field) or ``field=value``; case-insensitive substring
        match with ``*`` as wildcard; ``\\=`` is a literal ``=``."""
        if not search:
            return True
        for term in search.split():
            key, value = None, term
            m = re.match(r"^((?:[^=\\]|\\.)*?)=(.*)$", term)
            if m:
                key, value = m.group(1).replace("\\=", "="), m.group(2)
            value = value.replace("\\=", "=")
            pattern = re.compile(
                ".*".join(re.escape(p) for p in value.lower().split("*")), re.IGNORECASE
            )
            if key is None:
                candidates = [entry.title, *map(str, entry.content.values())]
            elif key in ("name", "title"):
                candidates = [entry.title]
            elif key.startswith("eai:acl."):
                candidates = [str((entry.acl or {}).get(key[len("eai:acl.") :], ""))]
            else:
                v = entry.content.get(key)
                candidates = [] if v is None else [str(v)]
            if not any(pattern.search(c) for c in candidates):
                return False
        return True

    def _filter(self, req: _Request, entries: list[_Entry]) -> list[_Entry]:
        search = req.q("search")
        entries = [e for e in entries if self._matches(search, e)]
        return sorted(entries, key=lambda e: e.title)

    # -- auth and server info -----------------------------------------------

    def _auth_login(self, req: _Request) -> _Response:
        f = req.fields()
        user, password = f.get("username"), f.get("password")
        if user is None or self.users.get(user) != password:
            raise _HTTPError(401, "Login failed", "WARN")
        if req.output_mode == "json":
            return _Response(200, json.dumps({"sessionKey": self.session_key}).encode())
        xml = f"<response>\n  <sessionKey>{escape(self.session_key)}</sessionKey>\n</response>\n"
        return _Response(200, xml.encode())

    def _server_info(self, req: _Request) -> _Response:
        content = {
            "build": SPLUNK_BUILD,
            "version": SPLUNK_VERSION,
            "serverName": "splunkd-standin",
            "host": "splunkd-standin",
            "product_type": "enterprise",
            "os_name": "Linux",
            "guid": str(uuid.UUID(int=0x5EED)),
            "kvStoreStatus": "ready",
            "server_roles": ["indexer", "kv_store", "license_master"],
            "isFree": "0",
            "isTrial": "0",
            "mode": "normal",
        }
        entry = _Entry("server-info", "server/info/server-info", content, _acl("system"), ("list",))
        return self._feed(req, "server-info", "server/info", [entry])

    # -- properties ----------------------------------------------------------

    def _properties(self, req: _Request, rest: list[str]) -> Optional[_Response]:
        confs = self.state.confs
        if not rest:
            if req.method == "GET":
                entries = [
                    _Entry(c, f"properties/{quote(c, safe='')}", {}, None, ("list",)) for c in confs
                ]
                return self._feed(req, "properties", "properties", self._filter(req, entries))
            if req.method == "POST":
                name = req.fields().get("__conf")
                if not name:
                    raise _HTTPError(400, "Missing argument: __conf")
                created = name not in confs
                self.state.ensure_conf(name)
                entry = _Entry(name, f"properties/{quote(name, safe='')}", {}, None, ("list",))
                return self._feed(req, "properties", "properties", [entry], 201 if created else 200)
            return self._method_not_allowed()
        conf = rest[0]
        if conf not in confs:
            raise _HTTPError(404, f"Could not find object id={conf}")
        conf_path = f"properties/{quote(conf, safe='')}"
        if len(rest) == 1:
            if req.method == "GET":
                entries = [
                    _Entry(s, f"{conf_path}/{quote(s, safe='')}", {}, None, ("list",))
                    for s in confs[conf]
                ]
                return self._feed(req, conf, conf_path, self._filter(req, entries))
            if req.method == "POST":
                stanza = req.fields().get("__stanza")
                if not stanza:
                    raise _HTTPError(400, "Missing argument: __stanza")
                confs[conf].setdefault(stanza, {})
                return self._feed(req, conf, conf_path, [], 201)
            return self._method_not_allowed()
        stanza = rest[1]
        if stanza not in confs[conf]:
            raise _HTTPError(404, f"Could not find object id={stanza}")
        stanza_path = f"{conf_path}/{quote(stanza, safe='')}"
        if len(rest) == 2:
            if req.method == "GET":
                view = self.state.stanza_view(conf, stanza)
                entries = [
                    _Entry(k, f"{stanza_path}/{quote(k, safe='')}", {}, None, ("list",), v)
                    for k, v in view.items()
                ]
                return self._feed(req, stanza, stanza_path, self._filter(req, entries))
            if req.method == "POST":
                confs[conf][stanza].update(req.fields())
                return self._feed(req, stanza, stanza_path, [])
            return self._method_not_allowed()
        if len(rest) == 3 and req.method == "GET":
            view = self.state.stanza_view(conf, stanza)
            if rest[2] not in view:
                raise _HTTPError(404, f"Could not find object id={rest[2]}")
            return _Response(200, view[rest[2]].encode("utf-8"), "text/plain; charset=UTF-8")
        return None

    # -- configs/conf-* ------------------------------------------------------

    def _stanza_entry(self, conf: str, stanza: str) -> _Entry:
        content: dict[str, Any] = {"disabled": "0"}
        content.update(self.state.stanza_view(conf, stanza))
        content["eai:appName"] = self.app
        content["eai:userName"] = "nobody"
        path = f"configs/conf-{quote(conf, safe='')}/{quote(stanza, safe='')}"
        return _Entry(stanza, path, content, _acl(self.app), ("list", "_reload", "edit", "remove"))

    def _configs(self, req: _Request, conf: str, rest: list[str]) -> Optional[_Response]:
        confs = self.state.confs
        coll_path = f"configs/conf-{quote(conf, safe='')}"
        title = f"conf-{conf}"
        if not rest:
            if req.method == "GET":
                entries = [self._stanza_entry(conf, s) for s in confs.get(conf, {})]
                return self._feed(req, title, coll_path, self._filter(req, entries))
            if req.method == "POST":
                fields = req.fields()
                name = fields.pop("name", None)
                if not name:
                    raise _HTTPError(400, "Missing argument: name")
                stanzas = self.state.ensure_conf(conf)
                if name in stanzas:
                    raise _HTTPError(409, f"An object with name={name} already exists", "ERROR")
                stanzas[name] = fields
                return self._feed(req, title, coll_path, [self._stanza_entry(conf, name)], 201)
            return self._method_not_allowed()
        if rest == ["_reload"]:
            return self._feed(req, title, coll_path, [])
        stanza = rest[0]
        stanzas = confs.get(conf, {})
        if stanza not in stanzas:
            raise _HTTPError(404, f"Could not find object id={stanza}")
        if len(rest) == 2 and req.method == "POST" and rest[1] in ("disable", "enable"):
            stanzas[stanza]["disabled"] = "1" if rest[1] == "disable" else "0"
            return self._feed(req, title, coll_path, [self._stanza_entry(conf, stanza)])
        if len(rest) == 2 and rest[1] == "_reload":
            return self._feed(req, title, coll_path, [])
        if len(rest) != 1:
            return None
        if req.method == "GET":
            return self._feed(req, title, coll_path, [self._stanza_entry(conf, stanza)])
        if req.method == "POST":
            fields = req.fields()
            if "name" in fields:
                raise _HTTPError(400, "Argument name is not supported by this handler.")
            stanzas[stanza].update(fields)
            return self._feed(req, title, coll_path, [self._stanza_entry(conf, stanza)])
        if req.method == "DELETE":
            del stanzas[stanza]
            entries = [self._stanza_entry(conf, s) for s in stanzas]
            return self._feed(req, title, coll_path, self._filter(req, entries))
        return self._method_not_allowed()

    # -- storage/passwords ---------------------------------------------------

    def _served(self, entries: list[_Entry]) -> list[_Entry]:
        """Record which storage/passwords entries (clear text included) a client gets."""
        self.passwords_served.extend((e.content["realm"], e.content["username"]) for e in entries)
        return entries

    def _password_entry(self, e: PasswordEntry) -> _Entry:
        content = {
            "clear_password": e.clear_password,
            "encr_password": e.encr_password,
            "password": MASKED_PASSWORD,
            "realm": e.realm,
            "username": e.username,
        }
        path = f"storage/passwords/{quote(e.name, safe='')}"
        return _Entry(e.name, path, content, _acl(self.app), ("list", "edit", "remove"))

    def _passwords(self, req: _Request, name: Optional[str]) -> Optional[_Response]:
        passwords = self.state.passwords
        coll = "storage/passwords"
        if name is None:
            if req.method == "GET":
                entries = [self._password_entry(e) for e in passwords.values()]
                return self._feed(req, "passwords", coll, self._served(self._filter(req, entries)))
            if req.method == "POST":
                fields = req.fields()
                user, password = fields.get("name"), fields.get("password")
                if not user:
                    raise _HTTPError(400, "Missing argument: name")
                if password is None:
                    raise _HTTPError(400, "Missing argument: password")
                realm = fields.get("realm", "")
                probe = PasswordEntry(realm, user, "", "")
                if probe.name in passwords:
                    raise _HTTPError(409, f"An object with name={probe.name} already exists")
                entry = self.state.put_password(realm, user, password)
                return self._feed(
                    req, "passwords", coll, self._served([self._password_entry(entry)]), 201
                )
            return self._method_not_allowed()
        entry = passwords.get(name)
        if entry is None:
            raise _HTTPError(404, f"Could not find object id={name}")
        if req.method == "GET":
            return self._feed(req, "passwords", coll, self._served([self._password_entry(entry)]))
        if req.method == "POST":
            fields = req.fields()
            if "password" not in fields:
                raise _HTTPError(400, "Missing argument: password")
            entry = self.state.put_password(entry.realm, entry.username, fields["password"])
            return self._feed(req, "passwords", coll, self._served([self._password_entry(entry)]))
        if req.method == "DELETE":
            del passwords[name]
            entries = [self._password_entry(e) for e in passwords.values()]
            return self._feed(req, "passwords", coll, self._served(self._filter(req, entries)))
        return self._method_not_allowed()

    # -- KV store: collections config ---------------------------------------

    def _collection_entry(self, name: str) -> _Entry:
        content: dict[str, Any] = {
            "disabled": "0",
            "profilingEnabled": "false",
            "profilingThresholdMs": "1000",
            "replicate": "false",
            "replication_dump_maximum_file_size": "10240",
            "replication_dump_strategy": "auto",
        }
        content.update(self.state.collections[name].config)
        content["eai:appName"] = self.app
        content["eai:userName"] = "nobody"
        path = f"storage/collections/config/{quote(name, safe='')}"
        return _Entry(name, path, content, _acl(self.app), ("list", "_reload", "edit", "remove"))

    def _kv_config(self, req: _Request, rest: list[str]) -> Optional[_Response]:
        colls = self.state.collections
        coll_path = "storage/collections/config"
        title = "collections-conf"
        if not rest:
            if req.method == "GET":
                entries = [self._collection_entry(n) for n in colls]
                return self._feed(req, title, coll_path, self._filter(req, entries))
            if req.method == "POST":
                fields = req.fields()
                name = fields.pop("name", None)
                if not name:
                    raise _HTTPError(400, "Missing argument: name")
                if name in colls:
                    raise _HTTPError(409, f"An object with name={name} already exists")
                colls[name] = KVCollection(config=fields)
                return self._feed(req, title, coll_path, [self._collection_entry(name)], 201)
            return self._method_not_allowed()
        if len(rest) != 1:
            return None
        name = rest[0]
        if name not in colls:
            raise _HTTPError(404, f"Could not find object id={name}")
        if req.method == "GET":
            return self._feed(req, title, coll_path, [self._collection_entry(name)])
        if req.method == "POST":
            colls[name].config.update(req.fields())
            return self._feed(req, title, coll_path, [self._collection_entry(name)])
        if req.method == "DELETE":
            del colls[name]
            entries = [self._collection_entry(n) for n in colls]
            return self._feed(req, title, coll_path, entries)
        return self._method_not_allowed()

    # -- KV store: data -------------------------------------------------------

    @staticmethod
    def _kv_save(coll: KVCollection, doc: dict[str, Any]) -> str:
        key = doc.get("_key")
        key = uuid.uuid4().hex[:24] if key in (None, "") else str(key)
        record = {k: v for k, v in doc.items() if k not in ("_key", "_user")}
        record["_user"] = "nobody"
        record["_key"] = key
        coll.records[key] = record
        return key

    def _kv_data(self, req: _Request, name: str, rest: list[str]) -> Optional[_Response]:
        coll = self.state.collections.get(name)
        if coll is None:
            raise _HTTPError(404, f"Collection: {name} does not exist")
        if not rest:
            if req.method == "GET":
                return self._kv_json(200, self._kv_query(req, coll))
            if req.method == "POST":
                doc = req.json_body()
                if not isinstance(doc, dict):
                    raise _HTTPError(400, "Request body must be a JSON object")
                if doc.get("_key") not in (None, "") and str(doc["_key"]) in coll.records:
                    raise _HTTPError(409, "A document with the same key and user already exists.")
                return self._kv_json(201, {"_key": self._kv_save(coll, doc)})
            if req.method == "DELETE":
                query = _parse_kv_query(req.q("query"))
                for key in [k for k, r in coll.records.items() if _kv_match(r, query)]:
                    del coll.records[key]
                return _Response(200, b"", "application/json")
            return self._method_not_allowed()
        if len(rest) != 1:
            return None
        key = rest[0]
        if key == "batch_save" and req.method == "POST":
            docs = req.json_body()
            if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
                raise _HTTPError(400, "Request body must be a JSON array of objects")
            if len(docs) > KV_BATCH_SAVE_LIMIT:
                raise _HTTPError(
                    400,
                    "Request exceeds API limits - see limits.conf for details. (Too many "
                    f"documents for a single batch save, limit: {KV_BATCH_SAVE_LIMIT})",
                )
            return self._kv_json(200, [self._kv_save(coll, d) for d in docs])
        if key == "batch_find" and req.method == "POST":
            queries = req.json_body()
            if not isinstance(queries, list):
                raise _HTTPError(400, "Request body must be a JSON array")
            return self._kv_json(200, [self._kv_find(coll, q) for q in queries])
        record = coll.records.get(key)
        if record is None:
            raise _HTTPError(404, "Could not find object.")
        if req.method == "GET":
            return self._kv_json(200, record)
        if req.method == "POST":
            doc = req.json_body()
            if not isinstance(doc, dict):
                raise _HTTPError(400, "Request body must be a JSON object")
            doc["_key"] = key
            return self._kv_json(200, {"_key": self._kv_save(coll, doc)})
        if req.method == "DELETE":
            del coll.records[key]
            return _Response(200, b"", "application/json")
        return self._method_not_allowed()

    def _kv_query(self, req: _Request, coll: KVCollection) -> list[dict[str, Any]]:
        spec = {
            "query": _parse_kv_query(req.q("query")),
            "sort": req.q("sort"),
            "skip": req.q("skip"),
            "limit": req.q("limit"),
            "fields": req.q("fields"),
        }
        return self._kv_find(coll, spec)

    @staticmethod
    def _kv_find(coll: KVCollection, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
        query = spec.get("query") or {}
        if isinstance(query, str):
            query = _parse_kv_query(query)
        found = [copy.deepcopy(r) for r in coll.records.values() if _kv_match(r, query)]
        sort = spec.get("sort")
        if sort:
            # "a,b:-1" or a list of such; applied last key first for stability
            terms = sort if isinstance(sort, list) else str(sort).split(",")
            for term in reversed(terms):
                fname, _, direction = str(term).partition(":")
                found.sort(
                    key=lambda r, f=fname: (r.get(f) is None, str(r.get(f))),
                    reverse=direction.strip() == "-1",
                )
        try:
            skip = int(spec.get("skip") or 0)
            limit = int(spec.get("limit") or 0)
        except ValueError:
            raise _HTTPError(400, "skip and limit must be integers") from None
        found = found[skip:]
        if limit > 0:
            found = found[:limit]
        fields = spec.get("fields")
        if fields:
            names = fields if isinstance(fields, list) else str(fields).split(",")
            include = [n.split(":")[0] for n in names if not n.endswith(":0")]
            exclude = [n.split(":")[0] for n in names if n.endswith(":0")]
            if include:
                keep = set(include) | {"_key"}
                found = [{k: v for k, v in r.items() if k in keep} for r in found]
            if exclude:
                found = [{k: v for k, v in r.items() if k not in exclude} for r in found]
        return found

    @staticmethod
    def _method_not_allowed() -> NoReturn:
        raise _HTTPError(405, "Method Not Allowed")


def _json_acl(acl: Mapping[str, Any]) -> dict[str, Any]:
    """ACL as splunkd's JSON output writes it (flags as booleans)."""
    out: dict[str, Any] = {}
    for k, v in acl.items():
        out[k] = v in ("1", "true") if isinstance(v, str) and v in ("0", "1") else v
    return out


# ---------------------------------------------------------------------------
# KV-store query language (the subset of MongoDB's that tests need)
# ---------------------------------------------------------------------------


def _parse_kv_query(text: Optional[str]) -> dict[str, Any]:
    if not text:
        return {}
    try:
        query = json.loads(text)
    except ValueError:
        raise _HTTPError(400, "Invalid JSON in query") from None
    if not isinstance(query, dict):
        raise _HTTPError(400, "Query must be a JSON object")
    return query


def _kv_compare(value: Any, op: str, arg: Any) -> bool:
    try:
        if op == "$eq":
            return value == arg
        if op == "$ne":
            return value != arg
        if op == "$gt":
            return value is not None and value > arg
        if op == "$gte":
            return value is not None and value >= arg
        if op == "$lt":
            return value is not None and value < arg
        if op == "$lte":
            return value is not None and value <= arg
        if op == "$in":
            return value in arg
        if op == "$nin":
            return value not in arg
        if op == "$exists":
            return (value is not None) == bool(arg)
        if op == "$regex":
            return value is not None and re.search(str(arg), str(value)) is not None
    except TypeError:
        return False
    raise _HTTPError(400, f"Unsupported query operator {op}")


def _kv_match(record: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    for key, cond in query.items():
        if key == "$and":
            if not all(_kv_match(record, q) for q in cond):
                return False
        elif key == "$or":
            if not any(_kv_match(record, q) for q in cond):
                return False
        elif isinstance(cond, dict) and cond and all(str(k).startswith("$") for k in cond):
            value = record.get(key)
            if not all(_kv_compare(value, op, arg) for op, arg in cond.items()):
                return False
        elif record.get(key) != cond:
            return False
    return True
