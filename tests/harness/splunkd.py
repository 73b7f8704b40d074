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
import json
import os
import re
import secrets as _secrets
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, NamedTuple, Optional
from urllib.parse import parse_qs, unquote, unquote_plus, urlsplit
from xml.sax.saxutils import escape

import requests
from splunklib import client

from .certs import TestCA, TLSHTTPServer, server_ssl_context
from .splunkd_configs import ConfigEndpoints
from .splunkd_kvstore import KV_BATCH_SAVE_LIMIT, KVStoreEndpoints
from .splunkd_passwords import MASKED_PASSWORD, PasswordEndpoints
from .splunkd_render import (
    SPLUNK_BUILD,
    SPLUNK_VERSION,
    FeedRendering,
    _acl,
    _Entry,
    _HTTPError,
    _Request,
    _Response,
)
from .splunkd_state import (
    CRED_CHUNK,
    CRED_END_MARK,
    CRED_SEP,
    ENCRYPTED_PLACEHOLDER,
    KVCollection,
    PasswordEntry,
    SplunkdState,
    _conf_str,
    credential_chunks,
    credential_realm,
)

__all__ = [
    "CRED_CHUNK",
    "CRED_END_MARK",
    "CRED_SEP",
    "ENCRYPTED_PLACEHOLDER",
    "KV_BATCH_SAVE_LIMIT",
    "MASKED_PASSWORD",
    "SPLUNK_BUILD",
    "SPLUNK_VERSION",
    "KVCollection",
    "PasswordEntry",
    "RequestRecord",
    "SplunkdStandIn",
    "SplunkdState",
    "credential_chunks",
    "credential_realm",
]


# ---------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------


class RequestRecord(NamedTuple):
    """One request as the stand-in saw it (never the body: it may hold secrets)."""

    method: str
    path: str  # percent-decoded
    query: dict[str, Any]  # one value per name, a list when repeated


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
# The stand-in
# ---------------------------------------------------------------------------


class SplunkdStandIn(FeedRendering, ConfigEndpoints, PasswordEndpoints, KVStoreEndpoints):
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
