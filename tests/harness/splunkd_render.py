"""Requests and answers of the splunkd stand-in (harness.splunkd), rendered as splunkd
renders them: Atom XML feeds unless the request asks ``output_mode=json``, JSON for
KV-store data, error bodies in either form, and splunkd's ``search=`` filter."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, Optional
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

SPLUNK_VERSION = "9.3.2"
SPLUNK_BUILD = "d8bb32809498"
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


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


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


def _json_acl(acl: Mapping[str, Any]) -> dict[str, Any]:
    """ACL as splunkd's JSON output writes it (flags as booleans)."""
    out: dict[str, Any] = {}
    for k, v in acl.items():
        out[k] = v in ("1", "true") if isinstance(v, str) and v in ("0", "1") else v
    return out


class FeedRendering:
    """The answers every endpoint family builds (a part of SplunkdStandIn: uses its
    ``app`` and ``server_uri``)."""

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

    @staticmethod
    def _method_not_allowed() -> NoReturn:
        raise _HTTPError(405, "Method Not Allowed")
